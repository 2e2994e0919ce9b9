#!/usr/bin/env node
// The llj-gguf command line: a thin layer over the API. Errors print one line and exit 1.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { loadModel, type Model } from "./model.js";
import { LljError } from "./errors.js";
import { readGgufSummary, unsupportedReason, SUPPORTED_ARCHITECTURES } from "./gguf.js";
import { syntheticModel, TINY_LLAMA } from "./synthetic.js";
import { formatModelInfo, formatForward, formatAnalysis, type AnalysisSummary } from "./report.js";
import { writeNpy } from "./npy.js";
import { reportFields } from "./report-data.js";
import { packageRoot } from "./native.js";
import { accessSync, constants as fsConstants, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { Linearization } from "./linearization.js";
import type { GpuOption } from "./backends.js";
import { steerCommand } from "./cli-steer.js";

function gpuOption(v: string | undefined): GpuOption {
  if (v === undefined || v === "auto") return "auto";
  if (v === "false" || v === "cpu" || v === "none") return false;
  return v as GpuOption;
}

/** --quiet: no status line and no tables; only the JSON asked for on stdout, the paths of files written, and errors. */
let quiet = false;
const say = (text: string) => {
  if (!quiet) console.log(text);
};
/** A file written: a labelled line, or with --quiet the bare path (for scripts). */
const wrote = (label: string, file: string, note = "", stream: (s: string) => void = console.log) =>
  stream(quiet ? file : `${label.padEnd(13)} ${file}${note}`);

/** One status line on stderr while long stages run — only on a terminal, so pipes and logs stay clean. */
function statusLine() {
  const tty = process.stderr.isTTY === true && !quiet;
  let shown = "";
  const write = (text: string) => {
    if (!tty || text === shown) return;
    process.stderr.write(`\r\x1b[K${text}`);
    shown = text;
  };
  return {
    stage: (name: string) => (p?: number) => write(p === undefined ? `${name}...` : `${name} ${Math.round(p * 100)}%`),
    clear: () => write(""),
  };
}

async function info(argv: { model: string; gpu?: string; tensors?: boolean; json?: boolean }) {
  let model: Model;
  try {
    model = await loadModel({ modelPath: argv.model, gpu: gpuOption(argv.gpu) });
  } catch (e) {
    // An architecture llj-gguf does not linearize: still show what the file is, and why.
    if (!(e instanceof LljError) || e.code !== "UNSUPPORTED") throw e;
    const g = await readGgufSummary(argv.model);
    const h = g.hparams;
    const summary = { path: g.path, architecture: g.architecture, supported: false, reason: unsupportedReason(g.architecture),
      layers: h.nLayer, nEmbd: h.nEmbd, heads: h.nHead, kvHeads: h.nHeadKv, tensors: g.tensors.length };
    if (argv.json) console.log(JSON.stringify(summary, null, 2));
    else {
      console.log([
        `model         ${g.path}`,
        `architecture  ${g.architecture}`,
        `linearization not supported: ${summary.reason}`,
        `shape         ${h.nLayer} layers, d=${h.nEmbd}, ${h.nHead} heads, ${h.nHeadKv} KV heads, ${g.tensors.length} tensors`,
        `supported     ${SUPPORTED_ARCHITECTURES.join(", ")}`,
      ].join("\n"));
    }
    return;
  }
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

/** The model `demo` analyses: Karpathy's stories260K, shipped in the package (models/README.md). */
const DEMO_MODEL = path.join(packageRoot, "models", "stories260K.gguf");
const DEMO_PROMPT = "Once upon a time, there was a little";

/**
 * The report file: always drawn from the summary as `--json` writes it (a JSON round trip),
 * so `report summary.json` redraws the very same bytes.
 */
async function writeReport(file: string, summary: AnalysisSummary): Promise<string> {
  const out = path.resolve(file);
  const { renderHtmlReport } = await import("./html-report.js");  // Vega loads only when a report is drawn
  writeFileSync(out, await renderHtmlReport(JSON.parse(JSON.stringify(summary)) as AnalysisSummary));
  return out;
}

async function demo(argv: { gpu?: string; prompt?: string; synthetic?: boolean; report: string }) {
  if (argv.synthetic) return syntheticDemo(argv.gpu, argv.prompt ?? "Once upon a time,", argv.report);
  const prompt = argv.prompt ?? DEMO_PROMPT;
  const shown = path.relative(process.cwd(), DEMO_MODEL);
  say(`model         ${shown.startsWith("..") ? DEMO_MODEL : shown} — Karpathy's tinyllamas stories260K, a trained TinyStories Llama shipped with llj-gguf (MIT)`);
  const model = await loadModel({ modelPath: DEMO_MODEL, gpu: gpuOption(argv.gpu) });
  try {
    const summary = await summarize(model, prompt, "exact", true);
    say(formatAnalysis(summary));
    const out = await writeReport(argv.report, summary);
    say("");
    wrote("report", out, "  (open it in a browser: the paper's figures for this prompt)");
  } finally {
    await model.dispose();
  }
}

/** The demo of earlier versions: a generated random-weight model (its decoded vectors are noise). */
async function syntheticDemo(gpu: string | undefined, prompt: string, report: string) {
  say("Generating a tiny synthetic llama model (random weights, real tokenizer; cached after the first run)...");
  const modelPath = await syntheticModel(TINY_LLAMA, "F32");
  const model = await loadModel({ modelPath, gpu: gpuOption(gpu) });
  try {
    say(formatModelInfo(model));
    say("");
    say("llama.cpp's own forward (random weights: the prediction is noise):");
    say(formatForward(model, await model.referenceForward(prompt)));
    say("");
    say("The exact linear system of that prompt (`llj-gguf analyze <model> <prompt>` on your own GGUF):");
    const summary = await summarize(model, prompt, "exact");
    say(formatAnalysis(summary));
    say("");
    wrote("report", await writeReport(report, summary));
  } finally {
    await model.dispose();
  }
}

/** What --json FILE and --npy DIR write besides the summary. */
interface AnalysisArrays {
  lin: Linearization;
  svd: Awaited<ReturnType<Linearization["svd"]>>;
  contributions: Float32Array;
  attribution: number[];
}

async function summarize(model: Model, prompt: string, precision: "exact" | "fast", layers = false,
  exportTo?: (a: AnalysisArrays, summary: AnalysisSummary) => Promise<void>): Promise<AnalysisSummary> {
  const t0 = performance.now();
  const status = statusLine();
  const lin = await model.linearize(prompt, { precision, onProgress: status.stage("primal pass") });
  try {
    const rec = await lin.reconstruction({ onProgress: status.stage("per-token contributions") });
    status.stage("non-detached contrast (two forwards)")();
    const nonlin = await lin.nonlinearReconstruction();
    let yy = 0, cc = 0;
    for (let k = 0; k < lin.nEmbd; k++) {
      yy += lin.output[k] ** 2;
      cc += (lin.biasTerm?.[k] ?? 0) ** 2;
    }
    const attribution = await lin.attribution();
    // Exact SVD for small d; the matrix-free randomized route (O(k) products) beyond.
    status.stage("singular vectors")();
    const s = await lin.svd({ k: 3, onProgress: status.stage("singular vectors") });
    const pick = (rows: { text: string }[][]) => rows.map((r) => r.map((t) => t.text));
    const singular: AnalysisSummary["singular"] = {
      values: Array.from(s.values),
      u: pick(await lin.decode(s.u, { space: "output", top: 6 })),
      v: pick(await lin.decode(s.v, { space: "input", top: 6 })),
    };
    const worst = Math.max(...Array.from(s.residuals, (r, j) => (s.values[j] > 0 ? r / s.values[j] : 0)));
    const singularNote = s.method !== "randomized" ? undefined
      : `matrix-free top-k, ${s.iterations} Krylov blocks, max ‖Jv − σu‖/σ ${worst.toExponential(1)}` +
        (s.converged ? "" : " — NOT converged: raise maxIterations or oversampling before trusting these vectors");
    if (layers) status.stage("emergence (one SVD per layer)")();
    const emergence = layers
      ? (await lin.emergence({ k: 4, top: 6 })).map((r) => ({ layer: r.layer, value: r.values[0], values: r.values, tokens: r.tokens[0].map((t) => t.text) }))
      : undefined;
    status.stage("report figures")();
    const figures = await reportFields(model, lin, rec, nonlin, s);
    const summary: AnalysisSummary = {
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
      ...figures,
    };
    if (exportTo) await exportTo({ lin, svd: s, contributions: rec.contributions, attribution: attribution.contributions }, summary);
    return summary;
  } finally {
    status.clear();
    await lin.dispose();
  }
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

/**
 * Creates an output folder one level at a time from its nearest existing ancestor, which must
 * be a writable folder: a recursive mkdir under /proc or /sys can loop forever instead of failing.
 */
function makeOutputDir(dir: string): void {
  const target = path.resolve(dir);
  const missing: string[] = [];
  let at = target;
  for (;;) {
    let st;
    try {
      st = statSync(at);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOTDIR") throw new LljError(`--npy ${dir}: part of the path is a file, not a folder`);
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new LljError(`--npy ${dir}: cannot use ${at} (${(e as Error).message})`);
      const up = path.dirname(at);
      if (up === at || missing.length > 64) throw new LljError(`--npy ${dir}: no existing parent folder`);
      missing.push(at);
      at = up;
      continue;
    }
    if (!st.isDirectory()) throw new LljError(`--npy ${dir}: ${at} is not a folder`);
    break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      throw new LljError(`--npy ${dir}: cannot create ${d} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  try {
    accessSync(target, fsConstants.W_OK);
  } catch {
    throw new LljError(`--npy ${dir}: the folder is not writable`);
  }
}

async function analyze(argv: { model: string; prompt: string; gpu?: string; precision: string; json?: string; layers?: boolean; npy?: string; report?: string }) {
  // refuse a bad output folder before the (long) analysis, not after it
  if (argv.npy !== undefined) makeOutputDir(argv.npy);
  const loading = statusLine();
  const interrupt = new AbortController();
  const onSigint = () => {
    interrupted = true;
    interrupt.abort(new LljError("interrupted (Ctrl-C)", { code: "ABORTED" }));
  };
  process.once("SIGINT", onSigint);
  const model = await loadModel({ modelPath: argv.model, gpu: gpuOption(argv.gpu), onLoadProgress: loading.stage("loading"), signal: interrupt.signal })
    .finally(loading.clear);
  // Ctrl-C: stop every running native call (they reject with ABORTED) and free the model
  interrupt.signal.addEventListener("abort", () => void model.dispose({ abort: true }).catch(() => {}), { once: true });
  try {
    let arrays: Record<string, number[]> | undefined;
    const summary = await summarize(model, argv.prompt, argv.precision as "exact" | "fast", argv.layers, async (a, s) => {
      if (argv.npy) await writeNpyDir(argv.npy, a, s);
      arrays = {
        output: Array.from(a.lin.output), contributions: Array.from(a.contributions), singularValues: Array.from(a.svd.values),
        u: Array.from(a.svd.u), v: Array.from(a.svd.v),
      };
    });
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

/** `report summary.json -o report.html`: the HTML report of a saved `analyze --json` summary. */
async function report(argv: { summary: string; output: string }) {
  let summary: AnalysisSummary;
  try {
    summary = JSON.parse(readFileSync(argv.summary, "utf8")) as AnalysisSummary;
  } catch (e) {
    throw new LljError(`cannot read ${argv.summary} as JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof summary !== "object" || summary === null || !Array.isArray(summary.tokens) || !Array.isArray(summary.logitContributions)) {
    throw new LljError(`${argv.summary} is not an analysis summary: write one with \`llj-gguf analyze <model> <prompt> --json FILE\``);
  }
  delete (summary as { arrays?: unknown }).arrays;  // --json FILE adds the raw arrays; the report reads the summary
  wrote("report", await writeReport(argv.output, summary));
}
/** Set by Ctrl-C during analyze: whatever then fails, the run was interrupted. */
let interrupted = false;

async function main() {
  await yargs(hideBin(process.argv))
    .scriptName("llj-gguf")
    .usage("$0 <command> [options]\n\nExact local linearization of GGUF language models: the detached Jacobian of a prompt, its SVD, token attribution and layer emergence.")
    .option("gpu", { type: "string", describe: 'backend: auto | cuda | vulkan | metal | false', default: "auto" })
    .option("quiet", { alias: "q", type: "boolean", describe: "no progress line and no tables: only the JSON asked for, the paths of the files written, and errors" })
    .middleware((argv) => {
      quiet = argv.quiet === true;
    })
    .command("info <model>", "show a GGUF model's architecture, sizes, tensors and the devices found",
      (y) => y.positional("model", { type: "string", demandOption: true, describe: "path to a .gguf file" })
        .option("tensors", { type: "boolean", describe: "list every tensor" })
        .option("json", { type: "boolean", describe: "print JSON" })
        .example("$0 info model.gguf --tensors", "architecture, shape, every tensor's type and device"),
      (argv) => info(argv as { model: string; gpu?: string; tensors?: boolean; json?: boolean }))
    .command("analyze <model> <prompt>", "linearize the model on a prompt: prediction, exact reconstruction, token contributions, singular vectors",
      (y) => y.positional("model", { type: "string", demandOption: true, describe: "path to a .gguf file" })
        .positional("prompt", { type: "string", demandOption: true })
        .option("precision", { choices: ["exact", "fast"], default: "exact", requiresArg: true, describe: "exact: F32 products on dequantized weights" })
        .option("json", { type: "string", describe: "write the analysis as JSON to FILE (no FILE: print it on stdout)" })
        .option("npy", { type: "string", requiresArg: true, describe: "write the arrays (Jacobian, singular vectors, attribution...) as .npy files into DIR" })
        .option("layers", { type: "boolean", describe: "add the layer-by-layer emergence table" })
        .option("report", { type: "string", describe: "write the self-contained HTML report (the paper's figures) to FILE" })
        .example('$0 analyze model.gguf "Once upon a time, there was a little" --layers --report report.html', "the analysis, with the emergence table and the HTML report")
        .example('$0 analyze model.gguf "The capital of France is" --json | jq .predictedTokenText', "the summary as JSON on stdout"),
      (argv) => analyze(argv as unknown as { model: string; prompt: string; gpu?: string; precision: string; json?: string; layers?: boolean; npy?: string; report?: string }))
    .command("report <summary>", "draw the HTML report of a summary saved with `analyze --json FILE`",
      (y) => y.positional("summary", { type: "string", demandOption: true, describe: "a JSON file written by analyze --json" })
        .option("output", { alias: "o", type: "string", demandOption: true, describe: "the HTML file to write" })
        .example("$0 report summary.json -o report.html", "the same report `analyze --report` would have written"),
      (argv) => report(argv as unknown as { summary: string; output: string }))
    .command("demo", "analyse a real trained model shipped with the package (stories260K, no download) and write its HTML report",
      (y) => y.option("prompt", { type: "string", describe: `the prompt (default "${DEMO_PROMPT}")` })
        .option("report", { type: "string", default: "llj-gguf-demo.html", describe: "where to write the HTML report" })
        .option("synthetic", { type: "boolean", describe: "use a generated random-weight model instead (its decoded vectors are noise)" })
        .example("$0 demo", `"${DEMO_PROMPT}" → " g": the analysis, the emergence table, and llj-gguf-demo.html`)
        .example("$0 demo --synthetic", "the same on a generated random-weight Llama"),
      (argv) => demo(argv as unknown as { gpu?: string; prompt?: string; synthetic?: boolean; report: string }))
    .command(steerCommand)
    .example("$0 demo", "the real trained stories260K (shipped, no download): analysis, emergence table, llj-gguf-demo.html")
    .example('$0 analyze model.gguf "Once upon a time," --layers --report report.html', "your own GGUF: the same analysis and its HTML report")
    .example("$0 info model.gguf", "what a GGUF file is, and whether llj-gguf linearizes it")
    .demandCommand(1, "name a command (see --help)")
    .strict()
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .help()
    .parseAsync();
}

main().catch((e: unknown) => {
  const msg = interrupted ? "interrupted (Ctrl-C)" : e instanceof Error ? e.message : String(e);
  console.error(`llj-gguf: ${msg.split("\n")[0]}`);
  // 130: the shell's code for a run stopped by SIGINT
  process.exit(interrupted || (e instanceof LljError && e.code === "ABORTED") ? 130 : 1);
});
