// Cancellation of native work: an Int32Array over a SharedArrayBuffer that native workers poll,
// set when the AbortSignal fires.
import { LljError, abortedError, fromNative, type LljErrorCode } from "./errors.js";

export function abortFlagFor(signal: AbortSignal | undefined): { flag: Int32Array; done: () => void } {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  if (!signal) return { flag, done: () => {} };
  signal.throwIfAborted();
  const onAbort = () => Atomics.store(flag, 0, 1);
  signal.addEventListener("abort", onAbort, { once: true });
  return { flag, done: () => signal.removeEventListener("abort", onAbort) };
}

/**
 * A user's progress callback made safe to call from native code: an exception it throws
 * would be an uncaught N-API callback exception (a crash in newer Node), so it is caught,
 * the operation is stopped through its abort flag, and `error()` returns it for the rejection.
 */
export function guardedProgress(cb: ((p: number) => void) | undefined, flag: Int32Array):
  { progress: ((p: number) => void) | undefined; error: () => unknown } {
  if (!cb) return { progress: undefined, error: () => undefined };
  let thrown: { e: unknown } | undefined;
  return {
    progress: (p: number) => {
      if (thrown) return;
      try {
        cb(p);
      } catch (e) {
        thrown = { e };
        Atomics.store(flag, 0, 1);
      }
    },
    error: () => thrown?.e,
  };
}

/** The rejection of an operation whose onProgress callback threw. */
export function progressError(e: unknown): LljError {
  return new LljError(`onProgress threw: ${e instanceof Error ? e.message : String(e)}`, { code: "INVALID_ARGUMENT", cause: e });
}

/**
 * One native call, as Model and Linearization make them: stopped by `signal` (through the
 * abort flag native code polls), its progress callback guarded, and whatever fails turned
 * into one LljError — ABORTED when the signal fired, the callback's own error when it threw,
 * else the native error (`fallback` code). A result finished after its callback threw is
 * handed to `discard` (to free it) and the call rejects.
 */
export async function nativeCall<T>(signal: AbortSignal | undefined, onProgress: ((p: number) => void) | undefined,
  call: (flag: Int32Array, progress?: (p: number) => void) => Promise<T>,
  options: { fallback?: LljErrorCode; discard?: (out: T) => void } = {}): Promise<T> {
  if (signal?.aborted) throw abortedError(signal.reason);
  const { flag, done } = abortFlagFor(signal);
  const guard = guardedProgress(onProgress, flag);
  try {
    const out = await call(flag, guard.progress);
    if (guard.error() !== undefined) {
      options.discard?.(out);
      throw progressError(guard.error());
    }
    return out;
  } catch (e) {
    if (e instanceof LljError) throw e;
    if (signal?.aborted) throw abortedError(signal.reason);
    if (guard.error() !== undefined) throw progressError(guard.error());
    throw fromNative(e, options.fallback);
  } finally {
    done();
  }
}
