// `llj-gguf demo`: the analysis of the real trained model shipped with the package.
import path from "node:path";
import type { Argv, CommandModule } from "yargs";
import { loadModel } from "../model.js";
import { packageRoot } from "../native.js";
import { syntheticModel, TINY_LLAMA } from "../synthetic.js";
import { formatAnalysis, formatForward, formatModelInfo } from "../report.js";
import { summarize } from "../analyses/summary.js";
import { gpuOption, say, statusLine, writeReport, wrote, type GlobalArgs } from "./common.js";

/** The model `demo` analyses: Karpathy's stories260K, shipped in the package (models/README.md). */
const DEMO_MODEL = path.join(packageRoot, "models", "stories260K.gguf");
const DEMO_PROMPT = "Once upon a time, there was a little";

interface DemoArgs extends GlobalArgs {
  prompt: string | undefined;
  synthetic: boolean | undefined;
  report: string;
}

async function demo(argv: DemoArgs): Promise<void> {
  if (argv.synthetic) return syntheticDemo(argv.gpu, argv.prompt ?? "Once upon a time,", argv.report);
  const prompt = argv.prompt ?? DEMO_PROMPT;
  const shown = path.relative(process.cwd(), DEMO_MODEL);
  say(`model         ${shown.startsWith("..") ? DEMO_MODEL : shown} — Karpathy's tinyllamas stories260K, a trained TinyStories Llama shipped with llj-gguf (MIT)`);
  const model = await loadModel({ modelPath: DEMO_MODEL, gpu: gpuOption(argv.gpu) });
  try {
    const status = statusLine();
    const summary = await summarize(model, prompt, { layers: true, onStage: status.onStage }).finally(status.clear);
    say(formatAnalysis(summary));
    const out = await writeReport(argv.report, summary);
    say("");
    wrote("report", out, "  (open it in a browser: the paper's figures for this prompt)");
  } finally {
    await model.dispose();
  }
}

/** The demo of earlier versions: a generated random-weight model (its decoded vectors are noise). */
async function syntheticDemo(gpu: string, prompt: string, report: string): Promise<void> {
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
    const status = statusLine();
    const summary = await summarize(model, prompt, { onStage: status.onStage }).finally(status.clear);
    say(formatAnalysis(summary));
    say("");
    wrote("report", await writeReport(report, summary));
  } finally {
    await model.dispose();
  }
}

export const demoCommand: CommandModule<GlobalArgs, DemoArgs> = {
  command: "demo",
  describe: "analyse a real trained model shipped with the package (stories260K, no download) and write its HTML report",
  builder: (y: Argv<GlobalArgs>) => y.option("prompt", { type: "string", describe: `the prompt (default "${DEMO_PROMPT}")` })
    .option("report", { type: "string", default: "llj-gguf-demo.html", describe: "where to write the HTML report" })
    .option("synthetic", { type: "boolean", describe: "use a generated random-weight model instead (its decoded vectors are noise)" })
    .example("$0 demo", `"${DEMO_PROMPT}" → " g": the analysis, the emergence table, and llj-gguf-demo.html`)
    .example("$0 demo --synthetic", "the same on a generated random-weight Llama"),
  handler: demo,
};
