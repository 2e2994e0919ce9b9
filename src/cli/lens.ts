// `llj-gguf lens fit` and `llj-gguf lens show`: fitting a Jacobian lens on a corpus and reading
// a prompt through one, layer by position. The work is the API's (src/lens.ts).
import type { Argv, CommandModule } from "yargs";
import { loadModel } from "../model.js";
import { LljError } from "../errors.js";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { Lens, fitLens, readCorpus, type LensEstimator, type LensToken } from "../lens.js";
import type { LensIntervention } from "../lens-interventions.js";
import { LENS_REPORT_TOP, lensReport, type LensReportCell } from "../lens-report.js";
import type { Model } from "../model.js";
import { resolveModelPath } from "../model-uri.js";
import { table } from "../report.js";
import { gpuOption, interruption, say, statusLine, wrote, type GlobalArgs } from "./common.js";

interface FitArgs extends GlobalArgs {
  model: string;
  corpus: string;
  output: string;
  layers: string | undefined;
  estimator: LensEstimator;
  "max-seq-len": number;
  "min-position": number;
  "max-prompts": number | undefined;
  checkpoint: string | undefined;
  dtype: "f16" | "f32";
}

interface ShowArgs extends GlobalArgs {
  model: string;
  lens: string;
  prompt: string;
  layers: string | undefined;
  positions: number | undefined;
  top: number;
  json: boolean | undefined;
  report: string | undefined;
}

interface InterveneArgs extends GlobalArgs {
  model: string;
  lens: string;
  prompt: string;
  layers: string;
  steer: string | undefined;
  ablate: string | undefined;
  swap: string | undefined;
  alpha: number | undefined;
  "max-tokens": number;
}

/** "0,2,5-7" → [0, 2, 5, 6, 7]. */
export function parseLayers(spec: string): number[] {
  const out: number[] = [];
  for (const part of spec.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new LljError(`--layers: "${part}" is not a layer or a range a-b`, { code: "INVALID_ARGUMENT" });
    const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new LljError(`--layers: the range ${part} runs backwards`, { code: "INVALID_ARGUMENT" });
    for (let l = a; l <= b; l++) out.push(l);
  }
  return out;
}

/** Ctrl-C aborts the running work (exit 130) instead of killing the process mid-write. */
function interruptible(): AbortController {
  const ac = new AbortController();
  process.once("SIGINT", () => {
    interruption.interrupted = true;
    ac.abort(new LljError("interrupted (Ctrl-C)", { code: "ABORTED" }));
  });
  return ac;
}

async function fit(argv: FitArgs): Promise<void> {
  const model = await loadModel({ modelPath: await resolveModelPath(argv.model), gpu: gpuOption(argv.gpu) });
  const status = statusLine();
  const ac = interruptible();
  try {
    let corpus = readCorpus(argv.corpus);
    if (argv["max-prompts"] !== undefined) corpus = corpus.slice(0, argv["max-prompts"]);
    const t0 = performance.now();
    const lens = await fitLens({
      model, corpus, estimator: argv.estimator, maxSeqLen: argv["max-seq-len"], minPosition: argv["min-position"],
      sourceLayers: argv.layers === undefined ? undefined : parseLayers(argv.layers), checkpoint: argv.checkpoint, signal: ac.signal,
      onProgress: (p) => status.onStage("lens fit (prompts)", (p.prompts + p.skipped) / p.total),
    });
    status.clear();
    await lens.save(argv.output, { dtype: argv.dtype });
    say(`fitted        ${lens.estimator} lens of layers ${lens.sourceLayers.join(", ")} on ${lens.nPrompts} prompts ` +
      `(${String(lens.metadata.skipped)} too short) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    wrote("lens", argv.output);
  } finally {
    status.clear();
    await model.dispose();
  }
}

async function show(argv: ShowArgs): Promise<void> {
  const model = await loadModel({ modelPath: await resolveModelPath(argv.model), gpu: gpuOption(argv.gpu) });
  try {
    const lens = await Lens.load(argv.lens);
    lens.checkModel(model);
    const lin = await model.linearize(argv.prompt);
    try {
      const L = model.hparams.nLayer;
      const layers = argv.layers === undefined ? [...lens.sourceLayers, L - 1] : parseLayers(argv.layers);
      for (const l of layers) {
        if (l !== L - 1 && !lens.sourceLayers.includes(l)) {
          throw new LljError(`layer ${l} is not in the lens (source layers ${lens.sourceLayers.join(", ")}; ${L - 1} reads through the identity)`, { code: "INVALID_ARGUMENT" });
        }
      }
      // the table's last 4 positions by default; the page, every position
      const n = lin.nTokens, last = (k: number) => Array.from({ length: Math.min(k, n) }, (_, i) => n - Math.min(k, n) + i);
      const positions = last(argv.positions ?? 4);
      const pagePositions = last(argv.positions ?? n);
      // the page shows the model's own prediction as its last row and the top 5 on hover
      const readLayers = argv.report && !layers.includes(L - 1) ? [...layers, L - 1] : layers;
      const readPositions = argv.report ? pagePositions : positions;
      const top = argv.report ? Math.max(argv.top, LENS_REPORT_TOP) : argv.top;
      const cells: LensReportCell[] = [];
      for (const layer of readLayers) {
        for (const position of readPositions) cells.push({ layer, position, tokens: await lens.readout(lin, { layer, position, top }) });
      }
      const pieces = model.tokenPieces(lin.tokens ?? []);
      let report: string | undefined;
      if (argv.report) {
        report = path.resolve(argv.report);
        writeFileSync(report, await lensReport({
          prompt: argv.prompt, tokenTexts: pieces,
          model: { path: model.path, description: model.description, architecture: model.architecture, nLayer: L, nEmbd: model.hparams.nEmbd, nVocab: model.hparams.nVocab },
          lens: { file: argv.lens, estimator: lens.estimator, nPrompts: lens.nPrompts, sourceLayers: lens.sourceLayers, dModel: lens.dModel, metadata: lens.metadata },
          readout: cells.filter((c) => c.layer !== L - 1), baseline: cells.filter((c) => c.layer === L - 1),
        }));
      }
      const rows: Array<{ layer: number; position: number; tokens: LensToken[] }> = cells
        .filter((c) => layers.includes(c.layer) && positions.includes(c.position))
        .map((c) => ({ ...c, tokens: c.tokens.slice(0, argv.top) }));
      if (argv.json) {
        console.log(JSON.stringify({ prompt: argv.prompt, lens: argv.lens, estimator: lens.estimator, nPrompts: lens.nPrompts, readout: rows }, null, 2));
        // on stderr, so that stdout still parses
        if (report) wrote("report", report, "", console.error);
        return;
      }
      say(`lens          ${argv.lens} (${lens.estimator}, ${lens.nPrompts} prompts)`);
      say(`readout       W_U·norm(J_l·h_l): the top token at each layer (rows) and position (columns); the last layer is the model's own output\n`);
      const head = ["layer", ...positions.map((p) => `${p} ${JSON.stringify(pieces[p])}`)];
      const body = layers.map((layer) => [String(layer), ...positions.map((p) => {
        const r = rows.find((x) => x.layer === layer && x.position === p)!;
        return r.tokens.map((t) => JSON.stringify(t.text)).join(" ");
      })]);
      say(table(body, ["right", ...positions.map(() => "left" as const)], head).join("\n"));
      if (report) wrote("report", report);
    } finally {
      await lin.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** A token named as a word that is one token on its own, or as id:N. */
function singleToken(model: Model, word: string, option: string): number {
  const id = /^id:(\d+)$/.exec(word);
  if (id) return Number(id[1]);
  const tokens = model.tokenize(word, { addSpecial: false });
  if (tokens.length !== 1) {
    throw new LljError(`${option}: ${JSON.stringify(word)} is ${tokens.length} tokens (${model.tokenPieces(tokens).map((t) => JSON.stringify(t)).join(" ")}), ` +
      `a lens direction is one token's: give a word that is one token, or id:N`, { code: "INVALID_ARGUMENT" });
  }
  return tokens[0];
}

async function intervene(argv: InterveneArgs): Promise<void> {
  const given = [argv.steer, argv.ablate, argv.swap].filter((x) => x !== undefined).length;
  if (given !== 1) throw new LljError("give one of --steer TOKEN, --ablate TOKEN[,TOKEN…] or --swap SOURCE,TARGET", { code: "INVALID_ARGUMENT" });
  const model = await loadModel({ modelPath: await resolveModelPath(argv.model), gpu: gpuOption(argv.gpu) });
  try {
    const lens = await Lens.load(argv.lens);
    lens.checkModel(model);
    const lin = await model.linearize(argv.prompt);  // its vocabulary gives the LM head rows
    let iv: LensIntervention, tracked: number[], what: string;
    const layers = parseLayers(argv.layers), names = (ids: number[]) => model.tokenPieces(ids).map((t) => JSON.stringify(t)).join(", ");
    try {
      if (argv.steer !== undefined) {
        tracked = [singleToken(model, argv.steer, "--steer")];
        iv = await lens.steering(lin.vocabulary, { token: tracked[0], layers, alpha: argv.alpha });
        what = `steer towards ${names(tracked)}, α ${argv.alpha ?? 4} × the median ‖h‖`;
      } else if (argv.ablate !== undefined) {
        tracked = argv.ablate.split(",").map((w) => singleToken(model, w, "--ablate"));
        iv = await lens.ablation(lin.vocabulary, { tokens: tracked, layers });
        what = `project out ${names(tracked)}`;
      } else {
        const pair = argv.swap!.split(",");
        if (pair.length !== 2) throw new LljError("--swap takes SOURCE,TARGET", { code: "INVALID_ARGUMENT" });
        tracked = pair.map((w) => singleToken(model, w, "--swap"));
        iv = await lens.swap(lin.vocabulary, { source: tracked[0], target: tracked[1], layers, alpha: argv.alpha });
        what = `swap the coordinates of ${names(tracked)}, α ${argv.alpha ?? 1}`;
      }
    } finally {
      await lin.dispose();
    }
    const opts = { maxTokens: argv["max-tokens"], stopAtEog: false, trackTokens: tracked, engine: "graph" as const };
    const plain = await model.generate(argv.prompt, opts);
    const edited = await model.generate(argv.prompt, { ...opts, intervention: iv });
    say(`lens          ${argv.lens} (${lens.estimator}, ${lens.nPrompts} prompts)`);
    say(`edit          ${what}, after layers ${layers.join(", ")}, at every position`);
    say(`plain         ${JSON.stringify(plain.text)}`);
    say(`edited        ${JSON.stringify(edited.text)}`);
    const lp = (g: typeof plain) => g.steps[0].trackedLogProbs!;
    const pieces = model.tokenPieces(tracked);
    for (let i = 0; i < tracked.length; i++) {
      say(`log p         ${JSON.stringify(pieces[i]).padEnd(12)} at the first step: ${lp(plain)[i].toFixed(3)} → ${lp(edited)[i].toFixed(3)}`);
    }
  } finally {
    await model.dispose();
  }
}

const fitCommand: CommandModule<GlobalArgs, FitArgs> = {
  command: "fit <model>",
  describe: "fit a Jacobian lens on a corpus and write it (the published torch format, or .safetensors)",
  builder: (y: Argv<GlobalArgs>) => y
    .positional("model", { type: "string", demandOption: true, describe: "a .gguf file or a model URI" })
    .option("corpus", { type: "string", demandOption: true, describe: "a text file (one prompt per line) or JSONL (a string or {\"text\"} per line)" })
    .option("output", { alias: "o", type: "string", demandOption: true, describe: "the lens file: .pt (torch.save, as published) or .safetensors" })
    .option("layers", { type: "string", describe: "source layers, e.g. 0,4,8-12 (default every layer below the last)" })
    .option("estimator", { choices: ["jlens", "rlens", "detached"] as const, default: "jlens" as const, describe: "the ordinary Jacobian (J-lens), the relevance rules (R-lens), or the detached map" })
    .option("max-seq-len", { type: "number", default: 128, describe: "prompts cut to this many tokens" })
    .option("min-position", { type: "number", default: 16, describe: "the first position averaged (attention sinks excluded)" })
    .option("max-prompts", { type: "number", describe: "use only the corpus's first N prompts" })
    .option("checkpoint", { type: "string", describe: "save the running sums here (and resume from it when it exists)" })
    .option("dtype", { choices: ["f16", "f32"] as const, default: "f16" as const, describe: "the matrices' storage type" })
    .example("$0 lens fit model.gguf --corpus prompts.txt -o lens.pt", "a J-lens of every layer"),
  handler: fit,
};

const interveneCommand: CommandModule<GlobalArgs, InterveneArgs> = {
  command: "intervene <model> <prompt>",
  describe: "generate with an edit in lens directions (steer, project out, swap) beside the plain continuation",
  builder: (y: Argv<GlobalArgs>) => y
    .positional("model", { type: "string", demandOption: true, describe: "a .gguf file or a model URI" })
    .positional("prompt", { type: "string", demandOption: true })
    .option("lens", { type: "string", demandOption: true, describe: "a lens file (.pt as published, or .safetensors)" })
    .option("layers", { type: "string", demandOption: true, describe: "the lens's source layers to edit after, e.g. 4,8-12" })
    .option("steer", { type: "string", describe: "add TOKEN's unit lens direction × α × the median ‖h‖" })
    .option("ablate", { type: "string", describe: "project out TOKEN[,TOKEN…]'s lens directions" })
    .option("swap", { type: "string", describe: "exchange SOURCE,TARGET's lens coordinates" })
    .option("alpha", { type: "number", describe: "strength (default 4 for --steer, 1 for --swap)" })
    .option("max-tokens", { type: "number", default: 16, describe: "tokens to generate" })
    .example('$0 lens intervene model.gguf --lens lens.pt --layers 10-14 --swap " France"," China" "The capital of France is"', "a coordinate swap"),
  handler: intervene,
};

const showCommand: CommandModule<GlobalArgs, ShowArgs> = {
  command: "show <model> <prompt>",
  describe: "read a prompt through a lens: the top tokens of each layer at the last positions",
  builder: (y: Argv<GlobalArgs>) => y
    .positional("model", { type: "string", demandOption: true, describe: "a .gguf file or a model URI" })
    .positional("prompt", { type: "string", demandOption: true })
    .option("lens", { type: "string", demandOption: true, describe: "a lens file (.pt as published, or .safetensors)" })
    .option("layers", { type: "string", describe: "layers to read, e.g. 0,4,8-12 (default the lens's and the last)" })
    .option("positions", { type: "number", describe: "the last N positions (default 4; with --report, the page shows every position)" })
    .option("top", { type: "number", default: 1, describe: "tokens per cell" })
    .option("json", { type: "boolean", describe: "print JSON (every cell's top tokens with scores and probabilities)" })
    .option("report", { type: "string", describe: "write the self-contained HTML page of the readout grid to FILE" })
    .example('$0 lens show model.gguf --lens lens.pt "The Eiffel Tower is in"', "the layer × position readout")
    .example('$0 lens show model.gguf --lens lens.pt "The Eiffel Tower is in" --report lens.html', "and its HTML page"),
  handler: show,
};

export const lensCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: "lens <command>",
  describe: "the Jacobian lens: fit one on a corpus, or read a prompt through one",
  builder: (y: Argv<GlobalArgs>) => y.command(fitCommand).command(showCommand).command(interveneCommand).demandCommand(1, "lens fit, lens show or lens intervene"),
  handler: () => undefined,
};
