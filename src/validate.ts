// Argument checks of the public API, in one place and one format: each refusal is an
// LljError INVALID_ARGUMENT naming the argument and what it must be. Checked exactly: no
// wrapping, no truncation of fractions, no coercion of strings or objects.
import os from "node:os";
import { invalid, isFloat32Array } from "./errors.js";

const show = (v: unknown): string => {
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return String(v);
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v);
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${Object.prototype.toString.call(v).slice(8, -1)}`;
  return typeof v === "function" ? "a function" : "an object";
};

/** An integer in [lo, hi] (a safe integer; never wrapped or rounded). */
export function integer(name: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
    throw invalid(`${name} must be an integer in [${lo}, ${hi + 1}), not ${show(v)}`);
  }
  return v;
}

/** An optional integer option: undefined keeps the default. */
export function optionalInteger(name: string, v: unknown, lo: number, hi: number): number | undefined {
  return v === undefined ? undefined : integer(name, v, lo, hi);
}

/** A finite number in (lo, hi] when exclusiveLo, else [lo, hi]. */
export function finite(name: string, v: unknown, lo: number, hi: number, exclusiveLo = false): number {
  if (typeof v !== "number" || !Number.isFinite(v) || (exclusiveLo ? v <= lo : v < lo) || v > hi) {
    throw invalid(`${name} must be a finite number in ${exclusiveLo ? "(" : "["}${lo}, ${hi}], not ${show(v)}`);
  }
  return v;
}

export function oneOf<T extends string>(name: string, v: unknown, allowed: readonly T[], def?: T): T {
  if (v === undefined && def !== undefined) return def;
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) {
    throw invalid(`${name} must be ${allowed.map((a) => JSON.stringify(a)).join(" or ")}, not ${show(v)}`);
  }
  return v as T;
}

export function optionalBoolean(name: string, v: unknown): boolean | undefined {
  if (v !== undefined && typeof v !== "boolean") throw invalid(`${name} must be true or false, not ${show(v)}`);
  return v as boolean | undefined;
}

/** An options object (undefined → {}). */
export function options<T extends object>(name: string, v: T | undefined): T {
  if (v === undefined) return {} as T;
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw invalid(`${name} must be an options object, not ${show(v)}`);
  return v;
}

export function optionalSignal(name: string, v: unknown): AbortSignal | undefined {
  if (v === undefined) return undefined;
  if (!(v instanceof AbortSignal)) throw invalid(`${name} must be an AbortSignal, not ${show(v)}`);
  return v;
}

export function optionalFunction<F extends (...a: never[]) => unknown>(name: string, v: unknown): F | undefined {
  if (v !== undefined && typeof v !== "function") throw invalid(`${name} must be a function, not ${show(v)}`);
  return v as F | undefined;
}

export function float32Array(name: string, v: unknown): Float32Array {
  if (!isFloat32Array(v)) throw invalid(`${name} must be a Float32Array, not ${show(v)}`);
  return v;
}

/** Token ids: integers in [0, nVocab), checked before any Int32 conversion (2^32 + 5 must not become 5). */
export function tokenIds(name: string, v: unknown, nVocab: number): number[] {
  if (v === null || typeof v !== "object" || typeof (v as ArrayLike<number>).length !== "number") {
    throw invalid(`${name} must be text, an array of token ids or { embeddings }, not ${show(v)}`);
  }
  const a = v as ArrayLike<unknown>;
  const out: number[] = new Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const t = a[i];
    if (typeof t !== "number" || !Number.isInteger(t)) throw invalid(`token at position ${i} is not an integer: ${show(t)}`);
    if (t < 0 || t >= nVocab) throw invalid(`token id ${t} at position ${i} is outside the vocabulary [0, ${nVocab})`);
    out[i] = t;
  }
  return out;
}

/** Worker threads: more than twice the cores only slows ggml down (threads spin on barriers). */
export const MAX_THREADS = Math.max(2, 2 * (os.availableParallelism?.() ?? os.cpus().length));
export function threads(v: unknown): number {
  if (v === undefined) return Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
  return integer("threads", v, 1, MAX_THREADS);
}

/** The activation budget of a batched pass: a positive byte count up to 2^50 (1 PiB; more is a unit mistake). */
export const MAX_BATCH_MEMORY = 2 ** 50;
export function batchMemoryBytes(v: unknown): number {
  if (v === undefined) return 512 * 1024 * 1024;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > MAX_BATCH_MEMORY) {
    throw invalid(`batchMemoryBytes must be a whole number of bytes in [1, 2^50], not ${show(v)}`);
  }
  return v;
}

/** The SVD options every route shares, checked once and with their defaults filled in. */
export interface SvdChoice {
  /** A position in [0, n), "all" or "each". */
  token: number | "all" | "each";
  k: number;
  method: "exact" | "randomized" | "auto";
  seed: number;
  oversampling: number;
  maxIterations: number;
  tolerance: number;
  batchMemoryBytes: number;
  onProgress: ((p: number) => void) | undefined;
  signal: AbortSignal | undefined;
}

export function svdOptions(o: Record<string, unknown>, nTokens: number): SvdChoice {
  const n = nTokens;
  const t = o.token ?? -1;
  let token: SvdChoice["token"];
  if (t === "all" || t === "each") token = t;
  else if (typeof t === "number" && Number.isInteger(t) && t < n && t >= -n) token = t < 0 ? n + t : t;
  else throw invalid(`token must be a position in [-${n}, ${n}), "all" or "each", not ${show(t)}`);
  const k = o.k ?? 8;
  if (typeof k !== "number" || !Number.isInteger(k) || k < 1) throw invalid(`k must be a positive integer, not ${show(k)}`);
  const method = o.method ?? "auto";
  if (method !== "exact" && method !== "randomized" && method !== "auto") throw invalid(`method must be "exact", "randomized" or "auto", not ${show(method)}`);
  const oversampling = o.oversampling ?? 10;
  if (typeof oversampling !== "number" || !Number.isInteger(oversampling) || oversampling < 0) throw invalid(`oversampling must be a non-negative integer, not ${show(oversampling)}`);
  const maxIterations = o.maxIterations ?? 16;
  if (typeof maxIterations !== "number" || !Number.isInteger(maxIterations) || maxIterations < 1) throw invalid(`maxIterations must be a positive integer, not ${show(maxIterations)}`);
  const tolerance = o.tolerance ?? 1e-4;
  if (typeof tolerance !== "number" || !(tolerance > 0) || !Number.isFinite(tolerance)) throw invalid(`tolerance must be positive and finite, not ${show(tolerance)}`);
  const seed = o.seed ?? 0;
  if (typeof seed !== "number" || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw invalid(`seed must be an integer in [0, 2^32), not ${show(seed)}`);
  const budget = o.batchMemoryBytes === undefined ? 256 * 2 ** 20 : batchMemoryBytes(o.batchMemoryBytes);
  return { token, k, method, seed, oversampling, maxIterations, tolerance, batchMemoryBytes: budget,
    onProgress: optionalFunction<(p: number) => void>("onProgress", o.onProgress), signal: optionalSignal("signal", o.signal) };
}
