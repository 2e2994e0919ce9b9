/** Error raised by llj-gguf for bad input or a failed operation; `message` says what to do. */
export class LljError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LljError";
  }
}
