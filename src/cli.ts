#!/usr/bin/env node
// The llj-gguf command line: a thin layer over the API. Errors print one line and exit 1.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { loadModel } from "./model.js";
import { syntheticModel, TINY_LLAMA } from "./synthetic.js";
import { formatModelInfo, formatForward } from "./report.js";
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
      console.log(JSON.stringify({ path: model.path, architecture: model.architecture, supported: true,
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
    console.log("llama.cpp's reference forward (random weights: the prediction is noise):");
    console.log(formatForward(model, await model.referenceForward(argv.prompt)));
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
