// Text generation, token by token, on one of two engines (native/engine/session.cpp):
//
// - "llama": llama.cpp's own decode with its KV cache (F32 cache, flash attention off, as the
//   reference forward). Unsteered generation and control vectors (llama_set_adapter_cvec)
//   run here: the continuation is llama.cpp's, token for token.
// - "graph": our own primal graph (the network every linearization is built on), the whole
//   sequence recomputed for each new token (no KV cache: n forwards of 1..n positions for n
//   tokens). The steering operator runs here: it adds, after its injectLayer, a vector that depends
//   on the position and is scaled by that position's ‖h_k‖, which llama.cpp's fixed per-layer
//   control vector cannot express.
//
// Sampling is the same code for both engines (below), so their continuations differ only
// by what the network computes.
import { getAddon, type NativeModel, type NativeSession } from "./native.js";
import { LljError, abortedError, fromNative, invalid } from "./errors.js";
import { abortFlagFor } from "./abort.js";
import * as check from "./validate.js";
import { uniformStream01 } from "./random.js";
import type { SteeringOperator } from "./steering.js";
import { LensIntervention } from "./lens-interventions.js";
import { readControlVector } from "./cvec.js";
import type { HyperParameters } from "./gguf.js";

/** Sampling instead of greedy decoding: temperature, then top-k, then top-p (nucleus), from a seeded generator. */
export interface SamplingOptions {
  /** > 0 (default 1). */
  temperature?: number;
  /** Keep the k most likely tokens (default: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p, in (0, 1] (default 1). */
  topP?: number;
  /** Seed of the generator, an integer in [0, 2^32) (default 0): the same seed, the same continuation. */
  seed?: number;
}

export interface GenerateOptions {
  /** Tokens to generate (default 32); prompt + maxTokens must fit the model's context. */
  maxTokens?: number;
  /** "greedy" (default: the most likely token, the first on ties) or sampling options. */
  sampling?: "greedy" | SamplingOptions;
  /** Steer with the detached Jacobian of a concept (model.steeringOperator); runs on the graph engine. λ defaults to the operator's. */
  steering?: SteeringOperator | { operator: SteeringOperator; lambda: number };
  /** Edit the stream with Jacobian-lens directions (lens.steering / ablation / swap); runs on the graph engine. */
  intervention?: LensIntervention;
  /** A control-vector GGUF (llama.cpp's layout, e.g. from SteeringOperator.exportControlVector), applied by llama.cpp, times scale (default 1). */
  controlVector?: { path: string; scale?: number };
  /** Which engine runs the network: "llama" (default without steering) or "graph" (our own primal graph; required for steering). */
  engine?: "llama" | "graph";
  /** Report the log-probability of these tokens at every step (GeneratedToken.trackedLogProbs). */
  trackTokens?: readonly number[];
  /** Stop at an end-of-generation token (default true); it is not part of the result. */
  stopAtEog?: boolean;
  threads?: number;
  /** Stops the generation between tokens and inside the native forward; it then rejects with ABORTED. */
  signal?: AbortSignal;
  /** Called with each token as it is generated (streaming). A callback that throws stops the generation. */
  onToken?: (token: GeneratedToken) => void;
}

export interface GeneratedToken {
  /** 0 for the first generated token. */
  index: number;
  token: number;
  /** The token's own text piece. */
  text: string;
  /** log p(token) under the model's distribution at this step (temperature 1, before any top-k/top-p). */
  logProb: number;
  /** log p of each of options.trackTokens at this step, in that order (null when none were asked). */
  trackedLogProbs: number[] | null;
}

export interface Generation {
  promptTokens: number[];
  /** The generated tokens (without an end-of-generation token that stopped it). */
  tokens: number[];
  /** The generated text (detokenized as a whole). */
  text: string;
  steps: GeneratedToken[];
  stopReason: "maxTokens" | "eog";
  engine: "llama" | "graph";
  /** The steering strength used (null without steering). */
  lambda: number | null;
}

/** What generation needs of a loaded model (given by Model, so that this file does not reach into it). */
export interface GenerationHost {
  /** The Model (steering operators are bound to the model they were made on). */
  owner: object;
  native(): NativeModel;
  hparams: HyperParameters;
  architecture: string;
  /** Whether our graph implements the model (the graph engine needs it). */
  linearizability: { ok: boolean; reason?: string };
  toTokens(prompt: string | ArrayLike<number>): number[];
  pieces(ids: number[]): string[];
  detokenize(ids: number[]): string;
  /** The caller's signal joined with the model's dispose({ abort: true }). */
  signal(user: AbortSignal | undefined): AbortSignal;
}

type Sampling = { greedy: true } | { greedy: false; temperature: number; topK: number; topP: number; seed: number };

/** Checked options of one generation. */
interface Plan {
  maxTokens: number;
  sampling: Sampling;
  operator: SteeringOperator | null;
  lambda: number | null;
  controlVector: { path: string; scale: number } | null;
  intervention: LensIntervention | null;
  engine: "llama" | "graph";
  track: number[] | null;
  stopAtEog: boolean;
  threads: number;
  signal: AbortSignal | undefined;
  onToken: ((t: GeneratedToken) => void) | undefined;
}

function isOperator(v: unknown): v is SteeringOperator {
  return typeof v === "object" && v !== null && typeof (v as SteeringOperator).sequence === "function" && typeof (v as SteeringOperator).injectLayer === "number";
}

/** Every option checked here, before anything native runs. */
export function generationPlan(host: GenerationHost, promptLength: number, options: GenerateOptions | undefined): Plan {
  const o = check.options("generate options", options);
  const room = host.hparams.contextLength - promptLength;
  if (room < 1) throw invalid(`the prompt has ${promptLength} tokens: no room is left in the model's context of ${host.hparams.contextLength}`);
  const maxTokens = check.optionalInteger("maxTokens", o.maxTokens, 1, room) ?? Math.min(32, room);
  let sampling: Sampling = { greedy: true };
  if (o.sampling !== undefined && o.sampling !== "greedy") {
    const s = check.options("sampling", o.sampling as SamplingOptions);
    sampling = {
      greedy: false,
      temperature: s.temperature === undefined ? 1 : check.finite("sampling.temperature", s.temperature, 0, 1e4, true),
      topK: check.optionalInteger("sampling.topK", s.topK, 1, host.hparams.nVocab) ?? host.hparams.nVocab,
      topP: s.topP === undefined ? 1 : check.finite("sampling.topP", s.topP, 0, 1, true),
      seed: check.optionalInteger("sampling.seed", s.seed, 0, 2 ** 32 - 1) ?? 0,
    };
  }
  let operator: SteeringOperator | null = null, lambda: number | null = null;
  if (o.steering !== undefined) {
    if (isOperator(o.steering)) {
      operator = o.steering;
      lambda = operator.lambda;
    } else {
      const st = check.options("steering", o.steering as { operator: SteeringOperator; lambda: number });
      if (!isOperator(st.operator)) throw invalid("steering must be a SteeringOperator (model.steeringOperator) or { operator, lambda }");
      operator = st.operator;
      lambda = check.finite("steering.lambda", st.lambda, -1e6, 1e6);
    }
    if (operator.disposed) throw new LljError("the steering operator has been disposed", { code: "DISPOSED" });
    if (!operator.belongsTo(host)) throw invalid("the steering operator was made on another model");
  }
  let controlVector: Plan["controlVector"] = null;
  if (o.controlVector !== undefined) {
    const c = check.options("controlVector", o.controlVector);
    if (typeof c.path !== "string" || c.path === "") throw invalid("controlVector.path must be the path of a control-vector GGUF");
    controlVector = { path: c.path, scale: c.scale === undefined ? 1 : check.finite("controlVector.scale", c.scale, -1e6, 1e6) };
  }
  let intervention: LensIntervention | null = null;
  if (o.intervention !== undefined) {
    if (!(o.intervention instanceof LensIntervention)) throw invalid("intervention must be a LensIntervention (lens.steering, lens.ablation or lens.swap)");
    intervention = o.intervention;
    if (intervention.dModel !== host.hparams.nEmbd) throw invalid(`the intervention's lens has d = ${intervention.dModel}, the model ${host.hparams.nEmbd}`);
    if (intervention.layers[intervention.layers.length - 1] >= host.hparams.nLayer - 1) throw invalid(`intervention layers must lie below the model's last layer ${host.hparams.nLayer - 1}`);
    intervention.checkPrompt(promptLength);
  }
  if ([operator, controlVector, intervention].filter((x) => x !== null).length > 1) throw invalid("steering, controlVector and intervention are three ways to edit the network: give one");
  const engine = check.oneOf("engine", o.engine, ["llama", "graph"] as const, operator || intervention ? "graph" : "llama");
  if (intervention && engine !== "graph") throw invalid('lens interventions run on the "graph" engine (the stream is edited between segments of our graph)');
  if (operator && engine !== "graph") throw invalid('steering runs on the "graph" engine (llama.cpp cannot add a position-dependent, norm-scaled vector)');
  if (controlVector && engine !== "llama") throw invalid('a control vector is applied by llama.cpp: use the "llama" engine');
  if (engine === "graph" && !host.linearizability.ok) {
    throw new LljError(`the graph engine (and steering) cannot run this model: ${host.linearizability.reason ?? "our graph does not implement it"}`, { code: "UNSUPPORTED" });
  }
  let track: number[] | null = null;
  if (o.trackTokens !== undefined) {
    if (!Array.isArray(o.trackTokens)) throw invalid("trackTokens must be an array of token ids");
    track = check.tokenIds("trackTokens", o.trackTokens, host.hparams.nVocab);
  }
  return {
    maxTokens, sampling, operator, lambda, controlVector, intervention, engine, track,
    stopAtEog: check.optionalBoolean("stopAtEog", o.stopAtEog) ?? true,
    threads: check.threads(o.threads),
    signal: check.optionalSignal("signal", o.signal),
    onToken: check.optionalFunction<(t: GeneratedToken) => void>("onToken", o.onToken),
  };
}

/** log softmax(logits)[t] for each t, in double. */
export function logProbs(logits: Float32Array, tokens: readonly number[]): number[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  return tokens.map((t) => logits[t] - lse);
}

/** The next token: the argmax (first on ties), or a draw after temperature, top-k and top-p. */
export function sampleToken(logits: Float32Array, sampling: Sampling, uniform: () => number): number {
  if (sampling.greedy) {
    let top = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[top]) top = i;
    return top;
  }
  // candidates by decreasing logit (ties by id, so the order is deterministic)
  const ids = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b).slice(0, sampling.topK);
  const z = ids.map((i) => logits[i] / sampling.temperature);
  const p = z.map((v) => Math.exp(v - z[0]));
  let total = p.reduce((a, b) => a + b, 0);
  let keep = ids.length;
  if (sampling.topP < 1) {
    let cum = 0;
    for (let j = 0; j < ids.length; j++) {
      cum += p[j] / total;
      if (cum >= sampling.topP) {
        keep = j + 1;
        break;
      }
    }
    total = p.slice(0, keep).reduce((a, b) => a + b, 0);
  }
  let r = uniform() * total;
  for (let j = 0; j < keep; j++) {
    r -= p[j];
    if (r < 0) return ids[j];
  }
  return ids[keep - 1];
}

/** The control vector of a plan as llama.cpp's buffer: n_embd·(n_layer − 1) values, layer 1 first. */
async function controlVectorData(host: GenerationHost, cv: { path: string; scale: number }): Promise<Float32Array> {
  const v = await readControlVector(cv.path, host.hparams);
  const data = v.data.slice();
  for (let i = 0; i < data.length; i++) data[i] *= cv.scale;
  return data;
}

/**
 * The generation itself, one token per iteration. The native session lives for the
 * iteration and is freed when it ends (finished, aborted or abandoned).
 */
export async function* generationSteps(host: GenerationHost, promptTokens: number[], plan: Plan, userSignal: AbortSignal | undefined):
  AsyncGenerator<GeneratedToken, Generation> {
  const signal = host.signal(userSignal);
  if (signal.aborted) throw abortedError(signal.reason);
  const { flag, done } = abortFlagFor(signal);
  const addon = getAddon();
  const eog = new Set(Array.from(addon.eogTokens({ model: host.native() })));
  const tokens = promptTokens.slice();
  const nCtx = promptTokens.length + plan.maxTokens;
  let session: NativeSession | undefined;
  const native = async <T>(call: () => Promise<T>): Promise<T> => {
    try {
      return await call();
    } catch (e) {
      if (signal.aborted) throw abortedError(signal.reason);
      throw fromNative(e);
    }
  };
  try {
    session = new addon.NativeSession({ model: host.native(), engine: plan.engine, nCtx, threads: plan.threads });
    const s = session;
    if (plan.controlVector) {
      const data = await controlVectorData(host, plan.controlVector);
      s.setControlVector({ data, ilStart: 1, ilEnd: host.hparams.nLayer - 1 });
    }
    // graph engine: the steering sequence follows the tokens (its vectors need their embeddings)
    const steer = plan.operator ? plan.operator.sequence(plan.lambda ?? plan.operator.lambda) : null;
    if (steer) await steer.extend(await native(() => s.embed({ tokens: Int32Array.from(tokens) })), signal);
    // lens interventions: the graph in segments, the stream edited after each edited layer
    const istate = plan.intervention?.newState();
    const intervened = async (iv: LensIntervention, state: NonNullable<typeof istate>): Promise<Float32Array> => {
      const ids = Int32Array.from(tokens);
      let stream: Float32Array | null = null, from = 0;
      for (const l of iv.layers) {
        const h = (await native(() => s.segment({ tokens: ids, stream, fromLayer: from, toLayer: l, abortFlag: flag }))).hidden;
        iv.apply(l, h, promptTokens.length, state);
        stream = h;
        from = l + 1;
      }
      return (await native(() => s.segment({ tokens: ids, stream, fromLayer: from, toLayer: host.hparams.nLayer - 1, abortFlag: flag }))).logits;
    };
    const uniform = plan.sampling.greedy ? () => 0 : uniformStream01(plan.sampling.seed);
    const steps: GeneratedToken[] = [];
    const generated: number[] = [];
    let stopReason: Generation["stopReason"] = "maxTokens";
    let pending = tokens.slice();  // the llama engine decodes only what it has not seen
    for (let index = 0; index < plan.maxTokens; index++) {
      if (signal.aborted) throw abortedError(signal.reason);
      let logits: Float32Array;
      if (plan.engine === "llama") {
        logits = await native(() => s.decode({ tokens: Int32Array.from(pending), abortFlag: flag }));
      } else if (plan.intervention) {
        logits = await intervened(plan.intervention, istate!);
      } else {
        logits = (await native(() => s.forward({ tokens: Int32Array.from(tokens), inject: steer ? steer.injection() : null, layer: plan.operator?.injectLayer ?? -1, normScaled: true, abortFlag: flag }))).logits;
      }
      const token = sampleToken(logits, plan.sampling, uniform);
      if (plan.stopAtEog && eog.has(token)) {
        stopReason = "eog";
        break;
      }
      const step: GeneratedToken = {
        index, token, text: host.pieces([token])[0], logProb: logProbs(logits, [token])[0],
        trackedLogProbs: plan.track ? logProbs(logits, plan.track) : null,
      };
      steps.push(step);
      generated.push(token);
      tokens.push(token);
      pending = [token];
      if (plan.onToken) {
        try {
          plan.onToken(step);
        } catch (e) {
          throw new LljError(`onToken threw: ${e instanceof Error ? e.message : String(e)}`, { code: "INVALID_ARGUMENT", cause: e });
        }
      }
      yield step;
      // the new token's embedding (the last row) extends the steering sums for the next step
      if (steer && index + 1 < plan.maxTokens) await steer.extend((await native(() => s.embed({ tokens: Int32Array.from(tokens) }))).slice((tokens.length - 1) * host.hparams.nEmbd), signal);
    }
    return {
      promptTokens, tokens: generated, text: generated.length ? host.detokenize(generated) : "", steps, stopReason,
      engine: plan.engine, lambda: plan.operator ? plan.lambda : null,
    };
  } finally {
    done();
    session?.dispose();
  }
}

/** generate(): the whole continuation, streamed to onToken; a tracked operation of the model. */
export async function generate(host: GenerationHost, run: <T>(body: () => Promise<T>) => Promise<T>, prompt: string | ArrayLike<number>,
  options: GenerateOptions | undefined): Promise<Generation> {
  const promptTokens = host.toTokens(prompt);
  const plan = generationPlan(host, promptTokens.length, options);
  return run(async () => {
    const it = generationSteps(host, promptTokens, plan, plan.signal);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  });
}

/**
 * generateStream(): the same as an async iterator of tokens (its return value is the
 * Generation). Options are checked at once; the model's dispose() waits until the iteration
 * ends (finished, or left with break/return()).
 */
export function generateStream(host: GenerationHost, run: <T>(body: () => Promise<T>) => Promise<T>, prompt: string | ArrayLike<number>,
  options: GenerateOptions | undefined): AsyncGenerator<GeneratedToken, Generation> {
  const promptTokens = host.toTokens(prompt);
  const plan = generationPlan(host, promptTokens.length, options);
  return (async function* () {
    // tracked from the first next(): a stream never iterated holds nothing
    let finish = () => {};
    const held = new Promise<void>((resolve) => (finish = resolve));
    void run(() => held);  // refused (DISPOSED) once the model is being disposed
    try {
      return yield* generationSteps(host, promptTokens, plan, plan.signal);
    } finally {
      finish();
    }
  })();
}
