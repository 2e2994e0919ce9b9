// `llj-gguf steer`: generation with and without the steering operator of a concept, side by
// side, and how much the concept's top decoded tokens gained in log-probability along the
// continuation. The work is the API's (src/generate.ts, src/steering.ts).
import type { Argv, CommandModule } from "yargs";
import { loadModel } from "../model.js";
import { LljError } from "../errors.js";
import type { Generation, GeneratedToken } from "../generate.js";
import { gpuOption, interruption, statusLine, type GlobalArgs } from "./common.js";
import { table } from "../report.js";

interface SteerArgs extends GlobalArgs {
  model: string;
  concept: string;
  prompt: string;
  layer: number | undefined;
  "inject-layer": number | undefined;
  lambda: number | undefined;
  tokens: number;
  top: number;
  "export-cvec": string | undefined;
  "cvec-direction": "singular" | "mean";
  temperature: number | undefined;
  seed: number;
  json: boolean | undefined;
  "ignore-eos": boolean | undefined;
}

/** log Σ_t p(t) over the tracked tokens at one step. */
function setLogProb(step: GeneratedToken): number {
  const lp = step.trackedLogProbs ?? [];
  const m = Math.max(...lp);
  return m + Math.log(lp.reduce((a, v) => a + Math.exp(v - m), 0));
}

/** The mean over the continuation's steps of each tracked token's log-probability, and of the set's. */
export function trackedMeans(g: Generation, nTracked: number): { perToken: number[]; set: number } {
  const perToken = new Array<number>(nTracked).fill(0);
  let set = 0;
  for (const s of g.steps) {
    s.trackedLogProbs?.forEach((v, j) => (perToken[j] += v / g.steps.length));
    set += setLogProb(s) / g.steps.length;
  }
  return { perToken, set };
}

/** Two texts in two columns of `width` characters, wrapped at spaces where possible. */
export function sideBySide(left: string, right: string, width: number, titles: [string, string]): string {
  const wrap = (t: string) => {
    const lines: string[] = [];
    for (const para of t.replace(/\r/g, "").split("\n")) {
      let rest = para;
      while (rest.length > width) {
        let cut = rest.lastIndexOf(" ", width);
        if (cut <= 0) cut = width;
        lines.push(rest.slice(0, cut));
        rest = rest.slice(cut).replace(/^ /, "");
      }
      lines.push(rest);
    }
    return lines;
  };
  const a = wrap(left), b = wrap(right);
  const out = [`${titles[0].padEnd(width)} │ ${titles[1]}`, `${"─".repeat(width)}─┼─${"─".repeat(width)}`];
  for (let i = 0; i < Math.max(a.length, b.length); i++) out.push(`${(a[i] ?? "").padEnd(width)} │ ${b[i] ?? ""}`);
  return out.join("\n");
}

async function steer(argv: SteerArgs): Promise<void> {
  const quiet = argv.quiet === true;
  const say = (s: string) => {
    if (!quiet && !argv.json) console.log(s);
  };
  const progress = statusLine();
  const status = progress.line;
  const interrupt = new AbortController();
  const onSigint = () => {
    interruption.interrupted = true;
    interrupt.abort(new LljError("interrupted (Ctrl-C)", { code: "ABORTED" }));
  };
  process.once("SIGINT", onSigint);
  const gpu = gpuOption(argv.gpu);
  const model = await loadModel({ modelPath: argv.model, gpu, signal: interrupt.signal, onLoadProgress: progress.stage("loading") }).finally(progress.clear);
  interrupt.signal.addEventListener("abort", () => void model.dispose({ abort: true }).catch(() => {}), { once: true });
  try {
    status("linearizing the concept...");
    const op = await model.steeringOperator({ concept: argv.concept, layer: argv.layer, injectLayer: argv["inject-layer"], lambda: argv.lambda, signal: interrupt.signal });
    const top = await op.topTokens(argv.top);
    const track = top.map((t) => t.id);
    const sampling = argv.temperature === undefined ? ("greedy" as const) : { temperature: argv.temperature, seed: argv.seed };
    // streamed: the status line shows each continuation as it grows
    const run = async (label: string, extra: object) => {
      let text = "";
      return model.generate(argv.prompt, { maxTokens: argv.tokens, sampling, trackTokens: track, signal: interrupt.signal,
        stopAtEog: !argv["ignore-eos"], ...extra,
        onToken: (t) => {
          text += t.text;
          status(`${label} ${t.index + 1}/${argv.tokens}: …${text.slice(-50).replace(/\n/g, " ")}`);
        } });
    };
    const plain = await run("unsteered", {});
    const steered = await run("steered", { steering: op });
    let cvec: { path: string; layer: number; norm: number; generation: Generation } | undefined;
    if (argv["export-cvec"]) {
      const file = await op.exportControlVector(argv["export-cvec"], { direction: argv["cvec-direction"] });
      cvec = { ...file, generation: await run("control vector", { controlVector: { path: file.path } }) };
    }
    status("");
    const p = trackedMeans(plain, track.length), s = trackedMeans(steered, track.length);
    const c = cvec ? trackedMeans(cvec.generation, track.length) : undefined;
    if (argv.json) {
      console.log(JSON.stringify({
        model: model.path, concept: argv.concept, conceptTokens: op.conceptTokens, prompt: argv.prompt, layer: op.layer, injectLayer: op.injectLayer, lambda: op.lambda,
        topTokens: top, unsteered: { text: plain.text, tokens: plain.tokens, meanLogProbs: p },
        steered: { text: steered.text, tokens: steered.tokens, meanLogProbs: s },
        controlVector: cvec ? { path: cvec.path, layer: cvec.layer, norm: cvec.norm, text: cvec.generation.text, tokens: cvec.generation.tokens, meanLogProbs: c } : undefined,
      }, null, 2));
      return;
    }
    say(`model     ${model.path} (${model.architecture}, ${model.hparams.nLayer} layers, d=${model.hparams.nEmbd})`);
    say(`concept   ${JSON.stringify(argv.concept)} (${op.nConcept} tokens) — its Jacobian at layer ${op.layer}, added after layer ${op.injectLayer}, λ = ${op.lambda}`);
    say(`          its top decoded tokens at that layer: ${top.map((t) => JSON.stringify(t.text)).join(" ")}`);
    say(`prompt    ${JSON.stringify(argv.prompt)}${argv.temperature === undefined ? " (greedy)" : ` (temperature ${argv.temperature}, seed ${argv.seed})`}`);
    say("");
    const width = Math.max(30, Math.min(60, Math.floor(((process.stdout.columns ?? 100) - 3) / 2)));
    say(sideBySide(plain.text, steered.text, width, ["unsteered (llama.cpp)", `steered (λ = ${op.lambda}, our graph)`]));
    say("");
    say("mean log-probability along each continuation of the concept's top tokens");
    const signed = (x: number) => (x >= 0 ? "+" : "") + x.toFixed(3);
    const row = (name: string, a: number, b: number, cv?: number) => [name, a.toFixed(3), b.toFixed(3), signed(b - a), ...(cv === undefined ? [] : [cv.toFixed(3)])];
    const rows = top.map((t, j) => row(JSON.stringify(t.text), p.perToken[j], s.perToken[j], c?.perToken[j]));
    rows.push(row("(any of them)", p.set, s.set, c?.set));
    say(table(rows, ["left", "right", "right", "right", "right"], ["token", "unsteered", "steered", "shift", ...(c ? ["control vector"] : [])]).join("\n"));
    if (cvec) {
      say("");
      say(`control vector ${cvec.path}: direction.${cvec.layer}, norm ${cvec.norm.toFixed(3)} (fixed direction; llama.cpp applies it)`);
      say(`  ${JSON.stringify(cvec.generation.text)}`);
    }
  } catch (e) {
    // whatever failed once Ctrl-C came (the model is then disposed under the running calls), the run was interrupted
    throw interrupt.signal.aborted ? interrupt.signal.reason : e;
  } finally {
    process.removeListener("SIGINT", onSigint);
    status("");
    await model.dispose();
  }
}

export const steerCommand: CommandModule<GlobalArgs, SteerArgs> = {
  command: "steer <model>",
  describe: "steer generation towards a concept with its detached Jacobian; unsteered and steered continuations side by side",
  builder: (y: Argv<GlobalArgs>) => y
    .positional("model", { type: "string", demandOption: true, describe: "a .gguf file, or a URI: hf:user/repo:quant, hf:user/repo/file.gguf, https://… (downloaded by node-llama-cpp)" })
    .option("concept", { type: "string", demandOption: true, requiresArg: true, describe: "the concept prompt (its last token's layer-l Jacobian steers)" })
    .option("prompt", { type: "string", demandOption: true, requiresArg: true, describe: "the text to continue" })
    .option("layer", { type: "number", requiresArg: true, describe: "the operator's layer: the concept's Jacobian of the residual stream after it (default ⌊2/3 of the layers⌋ − 1, as the reference)" })
    .option("inject-layer", { type: "number", requiresArg: true, describe: "add the steering vector after this layer (default: layer − 1, the stream entering block `layer`, as the reference)" })
    .option("lambda", { type: "number", requiresArg: true, describe: "steering strength λ: the insertion has norm λ‖h_k‖/2 (default 1)" })
    .option("tokens", { type: "number", default: 32, requiresArg: true, describe: "tokens to generate" })
    .option("top", { type: "number", default: 5, requiresArg: true, describe: "how many of the concept's top decoded tokens to follow" })
    .option("temperature", { type: "number", requiresArg: true, describe: "sample at this temperature (default: greedy)" })
    .option("seed", { type: "number", default: 0, requiresArg: true, describe: "seed of the sampler" })
    .option("export-cvec", { type: "string", requiresArg: true, describe: "also write the fixed-direction approximation as a llama.cpp control vector to FILE, and continue with it" })
    .option("cvec-direction", { choices: ["singular", "mean"] as const, default: "singular" as const, describe: "the control vector's direction: the leading singular vector, or the mean steering vector" })
    .option("ignore-eos", { type: "boolean", describe: "keep generating past an end-of-text token" })
    .option("json", { type: "boolean", describe: "print the result as JSON" })
    .example('$0 steer model.gguf --concept "Tom had a pet dog. The dog" --prompt "Once upon a time,"', "both continuations and the log-probability shift")
    .example('$0 steer model.gguf --concept "..." --prompt "..." --export-cvec dog.gguf', "also export and apply a llama.cpp control vector"),
  handler: (argv) => steer(argv),
};
