#!/usr/bin/env node
// The llj-gguf command line: a thin layer over the API. Errors print one line and exit 1.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { loadModel, type Model } from "./model.js";
import { syntheticModel, TINY_LLAMA } from "./synthetic.js";
import { formatModelInfo, formatForward, formatAnalysis, type AnalysisSummary } from "./report.js";
import type { GpuOption } from "./backends.js";

function gpuOption(v: string | undefined): GpuOption {
  if (v === undefined || v === "auto") return "auto";
  if (v === "false" || v === "cpu" || v === "none") return false;
  return v as GpuOption;
}

async function info(argv: { model: string; gpu?: string; tensors?: boolean; json?: boolean }) {
  const model = await loadModel({ modelPath: argv.model, gpu: gpuOption(argv.gpu) });
  try {
    if (argv.json) {
      console.log(JSON.stringify({ path: model.path, architecture: model.architecture, linearizability: model.linearizability,
        description: model.description, hparams: model.hparams, nParams: model.nParams, sizeBytes: model.sizeBytes,
        metadata: model.metadata, tensors: model.tensors, backends: model.backends }, null, 2));
    } else {
      console.log(formatModelInfo(model, { tensors: argv.tensors }));
    }
  } finally {
    await model.dispose();
  }
}

async function demo(argv: { gpu?: string; prompt: string }) {
  console.log("Generating a tiny synthetic llama model (random weights, real tokenizer; cached after the first run)...");
  const modelPath = await syntheticModel(TINY_LLAMA, "F32");
  const model = await loadModel({ modelPath, gpu: gpuOption(argv.gpu) });
  try {
    console.log(formatModelInfo(model));
    console.log("");
    console.log("llama.cpp's own forward (random weights: the prediction is noise):");
    console.log(formatForward(model, await model.referenceForward(argv.prompt)));
    console.log("");
    console.log("The exact linear system of that prompt (`llj-gguf analyze <model> <prompt>` on your own GGUF):");
    console.log(formatAnalysis(await summarize(model, argv.prompt, "exact")));
  } finally {
    await model.dispose();
  }
}

async function summarize(model: Model, prompt: string, precision: "exact" | "fast", layers = false): Promise<AnalysisSummary> {
  const t0 = performance.now();
  const lin = await model.linearize(prompt, { precision });
  try {
    const rec = await lin.reconstruction();
    const nonlin = await lin.nonlinearReconstruction();
    let yy = 0, cc = 0;
    for (let k = 0; k < lin.nEmbd; k++) {
      yy += lin.output[k] ** 2;
      cc += (lin.biasTerm?.[k] ?? 0) ** 2;
    }
    const attribution = await lin.attribution();
    // Exact SVD for small d; the matrix-free randomized route (O(k) products) beyond.
    const s = await lin.svd({ k: 3 });
    const pick = (rows: { text: string }[][]) => rows.map((r) => r.map((t) => t.text));
    const singular: AnalysisSummary["singular"] = {
      values: Array.from(s.values),
      u: pick(await lin.decode(s.u, { space: "output", top: 6 })),
      v: pick(await lin.decode(s.v, { space: "input", top: 6 })),
    };
    const singularNote = s.method === "randomized" ? `randomized top-k, residual estimate ${s.residualEstimate.toExponential(2)}` : undefined;
    const emergence = layers
      ? (await lin.emergence({ k: 1, top: 6 })).map((r) => ({ layer: r.layer, value: r.values[0], tokens: r.tokens[0].map((t) => t.text) }))
      : undefined;
    return {
      prompt,
      tokens: lin.tokens ?? [],
      tokenTexts: model.tokenPieces(lin.tokens ?? []),
      predictedToken: lin.predictedToken,
      predictedTokenText: model.tokenPieces([lin.predictedToken])[0],
      predictedLogit: lin.logits[lin.predictedToken],
      precision: lin.precision,
      affine: lin.affine,
      detached: { relativeError: rec.relativeError, maxAbsError: rec.maxAbsError },
      nonDetached: { relativeError: nonlin.relativeError, maxAbsError: nonlin.maxAbsError, epsilon: nonlin.epsilon },
      biasTermRelativeNorm: lin.biasTerm ? Math.sqrt(cc / yy) : null,
      contributionNorms: rec.contributionNorms,
      logitContributions: attribution.contributions,
      logitBiasContribution: attribution.biasContribution,
      singular,
      singularNote,
      emergence,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await lin.dispose();
  }
}

async function analyze(argv: { model: string; prompt: string; gpu?: string; precision: string; json?: boolean; layers?: boolean }) {
  const model = await loadModel({ modelPath: argv.model, gpu: gpuOption(argv.gpu) });
  try {
    const summary = await summarize(model, argv.prompt, argv.precision as "exact" | "fast", argv.layers);
    console.log(argv.json ? JSON.stringify(summary, null, 2) : formatAnalysis(summary));
  } finally {
    await model.dispose();
  }
}

async function main() {
  await yargs(hideBin(process.argv))
    .scriptName("llj-gguf")
    .usage("$0 <command> [options]\n\nExact local linearization of GGUF language models.")
    .option("gpu", { type: "string", describe: 'backend: auto | cuda | vulkan | metal | false', default: "auto" })
    .command("info <model>", "show a GGUF model's architecture, sizes, tensors and the devices found",
      (y) => y.positional("model", { type: "string", demandOption: true, describe: "path to a .gguf file" })
        .option("tensors", { type: "boolean", describe: "list every tensor" })
        .option("json", { type: "boolean", describe: "print JSON" }),
      (argv) => info(argv as { model: string; gpu?: string; tensors?: boolean; json?: boolean }))
    .command("analyze <model> <prompt>", "linearize the model on a prompt: prediction, exact reconstruction, token contributions",
      (y) => y.positional("model", { type: "string", demandOption: true, describe: "path to a .gguf file" })
        .positional("prompt", { type: "string", demandOption: true })
        .option("precision", { choices: ["exact", "fast"], default: "exact", describe: "exact: F32 products on dequantized weights" })
        .option("json", { type: "boolean", describe: "print JSON" })
        .option("layers", { type: "boolean", describe: "add the layer-by-layer emergence table" }),
      (argv) => analyze(argv as unknown as { model: string; prompt: string; gpu?: string; precision: string; json?: boolean; layers?: boolean }))
    .command("demo", "generate a tiny synthetic model (no download) and show it",
      (y) => y.option("prompt", { type: "string", default: "Once upon a time," }),
      (argv) => demo(argv as { gpu?: string; prompt: string }))
    .demandCommand(1, "name a command (see --help)")
    .strict()
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .help()
    .parseAsync();
}

main().catch((e: unknown) => {
  const msg = e instanceof Error ? e.message : String(e);
  console.error(`llj-gguf: ${msg.split("\n")[0]}`);
  process.exit(1);
});
