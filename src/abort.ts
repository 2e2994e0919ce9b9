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
