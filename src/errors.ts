/**
 * Stable reasons an llj-gguf operation is refused or fails; callers branch on `code`, never
 * on message text.
 * - INVALID_ARGUMENT: an argument or option of the call is wrong (the message names it);
 * - INVALID_MODEL: the file is missing, not GGUF, truncated, or its metadata/tensors are unusable;
 * - UNSUPPORTED: a valid file asks for something llj-gguf does not implement (architecture, tensor, key);
 * - NON_FINITE: a NaN or infinity appeared in the computation (the message says where first);
 * - OUT_OF_MEMORY: an allocation failed or would exceed a limit;
 * - ABORTED: an AbortSignal (or `dispose({ abort: true })`) stopped the operation;
 * - DISPOSED: the model or linearization was disposed before or during the call;
 * - NATIVE: llama.cpp/ggml failed for another reason (its logged reason is in the message);
 * - NETWORK: a model URI (hf:, https:) could not be resolved or downloaded.
 */
export type LljErrorCode =
  | "INVALID_ARGUMENT" | "INVALID_MODEL" | "UNSUPPORTED" | "NON_FINITE" | "OUT_OF_MEMORY" | "ABORTED" | "DISPOSED" | "NATIVE" | "NETWORK";

const CODES = new Set<string>(["INVALID_ARGUMENT", "INVALID_MODEL", "UNSUPPORTED", "NON_FINITE", "OUT_OF_MEMORY", "ABORTED", "DISPOSED", "NATIVE", "NETWORK"]);

/** The one error type of llj-gguf: every refusal and failure, with a stable `code`; `message` says what to do. */
export class LljError extends Error {
  readonly code: LljErrorCode;
  constructor(message: string, options?: { cause?: unknown; code?: LljErrorCode }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LljError";
    this.code = options?.code ?? "INVALID_ARGUMENT";
  }
}

/** An INVALID_ARGUMENT refusal. */
export function invalid(message: string): LljError {
  return new LljError(message, { code: "INVALID_ARGUMENT" });
}

/**
 * An LljError from whatever a native call or dependency threw. Native messages may start with
 * "[CODE] " (native/napi/common.h: coded errors); otherwise the code is inferred: N-API's
 * Range/TypeErrors are argument checks, allocation failures are OUT_OF_MEMORY.
 */
export function fromNative(e: unknown, fallback: LljErrorCode = "NATIVE"): LljError {
  if (e instanceof LljError) return e;
  // by shape, not instanceof: native errors may come from another realm (vm contexts, jest)
  const err = typeof e === "object" && e !== null ? (e as { message?: unknown; name?: unknown }) : undefined;
  const raw = typeof err?.message === "string" ? err.message : String(e);
  const m = /^\[([A-Z_]+)\] ([\s\S]*)$/.exec(raw);
  if (m && CODES.has(m[1])) return new LljError(m[2], { code: m[1] as LljErrorCode, cause: e });
  let code: LljErrorCode = fallback;
  if (err?.name === "RangeError" || err?.name === "TypeError") code = "INVALID_ARGUMENT";
  else if (/has been disposed/.test(raw)) code = "DISPOSED";
  else if (/\b(out of memory|failed to allocate|bad_alloc|cannot allocate)\b/i.test(raw)) code = "OUT_OF_MEMORY";
  return new LljError(raw, { code, cause: e });
}

/** The ABORTED error for a signal (its reason kept as the cause). */
export function abortedError(reason: unknown): LljError {
  if (reason instanceof LljError) return reason;
  const what = reason instanceof Error && reason.message ? reason.message : "the operation was aborted";
  return new LljError(/abort/i.test(what) ? what : `aborted: ${what}`, { code: "ABORTED", cause: reason });
}

/** True for a Float32Array from any realm (native results, worker threads, test sandboxes). */
export function isFloat32Array(x: unknown): x is Float32Array {
  return ArrayBuffer.isView(x) && Object.prototype.toString.call(x) === "[object Float32Array]";
}
