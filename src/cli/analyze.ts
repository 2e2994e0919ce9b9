// `llj-gguf analyze <model> <prompt>`: the linear system of one prompt and the paper's analyses.
import { writeFileSync } from "node:fs";
import path from "node:path";
import type { Argv, CommandModule } from "yargs";
import { loadModel } from "../model.js";
import { LljError } from "../errors.js";
import { writeNpy } from "../npy.js";
import { formatAnalysis } from "../report.js";
import { formatPlan } from "../planner.js";
import { summarize, type AnalysisArrays, type AnalysisSummary } from "../analyses/summary.js";
import { gpuOption, interruption, makeOutputDir, say, statusLine, writeReport, wrote, type GlobalArgs } from "./common.js";

interface AnalyzeArgs extends GlobalArgs {
  model: string;
  prompt: string;
  precision: "exact" | "fast";
  json: string | undefined;
  npy: string | undefined;
  layers: boolean | undefined;
  report: string | undefined;
  plan: boolean | undefined;
  "memory-budget": string | undefined;
}

/** "512M", "2G", "1.5GiB", "1000000" → bytes. */
export function parseBytes(spec: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(spec.trim());
  if (!m) throw new LljError(`--memory-budget: "${spec}" is not a size (e.g. 512M, 2G, 1.5GiB or bytes)`, { code: "INVALID_ARGUMENT" });
  const scale = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2].toUpperCase() as "" | "K" | "M" | "G" | "T"];
  return Math.round(Number(m[1]) * scale);
}

/**
 * --npy DIR: the arrays of an analysis as .npy files, described by manifest.json. The full
 * Jacobian (n·d² floats) is written when the exact SVD route computed it (d ≤ 256).
 */
async function writeNpyDir(dir: string, a: AnalysisArrays, summary: AnalysisSummary): Promise<void> {
  makeOutputDir(dir);
  const { lin, svd } = a;
  const n = lin.nTokens, d = lin.nEmbd, k = svd.values.length;
  const files: Record<string, { shape: number[]; meaning: string }> = {};
  const put = (name: string, data: Float32Array | Int32Array, shape: number[], meaning: string) => {
    writeNpy(path.join(dir, `${name}.npy`), data, shape);
    files[`${name}.npy`] = { shape, meaning };
  };
  put("tokens", Int32Array.from(lin.tokens ?? []), [n], "prompt token ids");
  put("embeddings", lin.inputEmbeddings, [n, d], "x: input embeddings, one row per position");
  put("output", lin.output, [d], "y: last position after the final norm");
  put("logits", lin.logits, [lin.logits.length], "logits of the last position");
  put("contributions", a.contributions, [n, d], "J_i x_i per position (rows sum to y, plus the bias term if affine)");
  put("logit_contributions", Float32Array.from(a.attribution), [n], "W_U[predicted] . J_i x_i per position");
  if (lin.biasTerm) put("bias_term", lin.biasTerm, [d], "c: the affine constant");
  put("singular_values", svd.values, [k], "leading singular values of the last token's J_i");
  put("u", svd.u, [k, d], "left singular vectors (rows), u . y >= 0");
  put("v", svd.v, [k, svd.vWidth], "right singular vectors (rows)");
  if (svd.method === "exact") {
    const J = await lin.cachedJacobian();
    put("jacobian", J.data, [n, d, d], "J[i, k, c] = d y_k / d x_{i,c}");
  }
  writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ summary, files }, null, 2) + "\n");
}

async function analyze(argv: AnalyzeArgs): Promise<void> {
  // refuse a bad output folder before the (long) analysis, not after it
  if (argv.npy !== undefined) makeOutputDir(argv.npy);
  const status = statusLine();
  const interrupt = new AbortController();
  const onSigint = () => {
    interruption.interrupted = true;
    interrupt.abort(new LljError("interrupted (Ctrl-C)", { code: "ABORTED" }));
  };
  process.once("SIGINT", onSigint);
  const model = await loadModel({ modelPath: argv.model, gpu: gpuOption(argv.gpu), onLoadProgress: status.stage("loading"), signal: interrupt.signal })
    .finally(status.clear);
  // Ctrl-C: stop every running native call (they reject with ABORTED) and free the model
  interrupt.signal.addEventListener("abort", () => void model.dispose({ abort: true }).catch(() => {}), { once: true });
  try {
    const memoryBudget = argv["memory-budget"] === undefined ? undefined : parseBytes(argv["memory-budget"]);
    if (argv.plan) {
      // the plan of what analyze would run, and exit (a refusal is an error line, as the run's would be)
      say(formatPlan(model.plan(argv.prompt, { precision: argv.precision, memoryBudget })).join("\n"));
      return;
    }
    let arrays: Record<string, number[]> | undefined;
    const summary = await summarize(model, argv.prompt, {
      precision: argv.precision, layers: argv.layers, onStage: status.onStage, memoryBudget,
      exportArrays: async (a, s) => {
        if (argv.npy) await writeNpyDir(argv.npy, a, s);
        arrays = {
          output: Array.from(a.lin.output), contributions: Array.from(a.contributions), singularValues: Array.from(a.svd.values),
          u: Array.from(a.svd.u), v: Array.from(a.svd.v),
        };
      },
    }).finally(status.clear);
    const report = argv.report ? await writeReport(argv.report, summary) : undefined;
    if (argv.json) {
      // --json FILE: the summary and the arrays (row-major, shapes in the summary) in one file
      writeFileSync(argv.json, JSON.stringify({ ...summary, arrays }, null, 2) + "\n");
      wrote("wrote", argv.json);
      if (argv.npy) wrote("wrote", argv.npy + path.sep, " (see manifest.json)");
    } else if (argv.json === "") {
      console.log(JSON.stringify(summary, null, 2));
    } else {
      say(formatAnalysis(summary));
      if (argv.npy) wrote("wrote", argv.npy + path.sep, " (see manifest.json)");
    }
    // On stderr when stdout carries the JSON, so that a pipe still parses.
    if (report) wrote("report", report, "", argv.json === "" ? console.error : console.log);
  } finally {
    process.removeListener("SIGINT", onSigint);
    await model.dispose();
  }
}

export const analyzeCommand: CommandModule<GlobalArgs, AnalyzeArgs> = {
  command: "analyze <model> <prompt>",
  describe: "linearize the model on a prompt: prediction, exact reconstruction, token contributions, singular vectors",
  builder: (y: Argv<GlobalArgs>) => y.positional("model", { type: "string", demandOption: true, describe: "a .gguf file, or a URI: hf:user/repo:quant, hf:user/repo/file.gguf, https://… (downloaded by node-llama-cpp)" })
    .positional("prompt", { type: "string", demandOption: true })
    .option("precision", { choices: ["exact", "fast"] as const, default: "exact" as const, requiresArg: true, describe: "exact: F32 products on dequantized weights" })
    .option("json", { type: "string", describe: "write the analysis as JSON to FILE (no FILE: print it on stdout)" })
    .option("npy", { type: "string", requiresArg: true, describe: "write the arrays (Jacobian, singular vectors, attribution...) as .npy files into DIR" })
    .option("layers", { type: "boolean", describe: "add the layer-by-layer emergence table" })
    .option("report", { type: "string", describe: "write the self-contained HTML report (the paper's figures) to FILE" })
    .option("memory-budget", { type: "string", requiresArg: true, describe: "what the analysis may allocate, e.g. 2G (default 80% of the free memory): batches chunked to fit, the full Jacobian only where it fits" })
    .option("plan", { type: "boolean", describe: "print the memory plan (each part, the batch, the route and why) and exit" })
    .example('$0 analyze model.gguf "Once upon a time, there was a little" --layers --report report.html', "the analysis, with the emergence table and the HTML report")
    .example('$0 analyze model.gguf "The capital of France is" --json | jq .predictedTokenText', "the summary as JSON on stdout"),
  handler: analyze,
};
