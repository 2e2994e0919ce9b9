// The lifetime of an object over native resources (a model, a linearization): every call is
// tracked while it runs, dispose() waits for them (or aborts them when asked), and work
// issued once disposal has begun is refused with DISPOSED.
import { LljError } from "./errors.js";

export interface DisposeOptions {
  /** Abort running operations instead of waiting for them to finish (they reject with ABORTED). */
  abort?: boolean;
}

export class Lifecycle {
  #state: "live" | "disposing" | "disposed" = "live";
  #pending = new Set<Promise<unknown>>();
  #abort = new AbortController();
  #disposal: Promise<void> | undefined;

  constructor(private readonly what: string) {}

  get live(): boolean {
    return this.#state === "live";
  }

  /** Refuses new work once disposal has begun. */
  enter(): void {
    if (this.#state !== "live") throw new LljError(`the ${this.what} has been disposed`, { code: "DISPOSED" });
  }

  /** The signal an operation polls: the caller's, and dispose({ abort: true }). */
  signal(user: AbortSignal | undefined): AbortSignal {
    return user ? AbortSignal.any([user, this.#abort.signal]) : this.#abort.signal;
  }

  /** Runs `body` as tracked work of this object (refused once disposal has begun). */
  run<T>(body: () => Promise<T>): Promise<T> {
    this.enter();
    return this.track(body);
  }

  /**
   * Tracks `body` without refusing it while disposal waits: a step of work that is already
   * running (a linearization's call that needs one more from its model), which disposal must
   * wait for rather than cut off. Refused only once the object is freed.
   */
  track<T>(body: () => Promise<T>): Promise<T> {
    if (this.#state === "disposed") throw new LljError(`the ${this.what} has been disposed`, { code: "DISPOSED" });
    const p = body();
    this.#pending.add(p);
    const forget = () => this.#pending.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Waits for (or aborts) running work, then frees; idempotent (later calls share the first). */
  dispose(options: DisposeOptions | undefined, free: () => Promise<void> | void): Promise<void> {
    if (options?.abort) this.#abort.abort(new LljError(`the ${this.what} was disposed with { abort: true }: operation aborted`, { code: "ABORTED" }));
    this.#disposal ??= (async () => {
      this.#state = "disposing";
      while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
      try {
        await free();
      } finally {
        this.#state = "disposed";
      }
    })();
    return this.#disposal;
  }
}
