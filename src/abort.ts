// Cancellation of native work: an Int32Array over a SharedArrayBuffer that native workers poll,
// set when the AbortSignal fires.
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
