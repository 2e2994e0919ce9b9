/** Error raised by llj-gguf for bad input or a failed operation; `message` says what to do. */
export class LljError extends Error {
  /** A stable reason for callers that branch on it (e.g. "unsupported-architecture"). */
  readonly code?: string;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, options);
    this.name = "LljError";
    this.code = options?.code;
  }
}

/** True for a Float32Array from any realm (native results, worker threads, test sandboxes). */
export function isFloat32Array(x: unknown): x is Float32Array {
  return ArrayBuffer.isView(x) && Object.prototype.toString.call(x) === "[object Float32Array]";
}
