// Models by URI: `hf:user/repo:quant`, `hf:user/repo/file.gguf` and `https://…`, resolved and
// downloaded by node-llama-cpp's own resolver (resolveModelFile) into its models folder, with
// its progress bar. A split GGUF is named by its first file; the resolver fetches the rest.
import { resolveModelFile } from "node-llama-cpp";
import { LljError, abortedError } from "./errors.js";

/** Whether a model path is a URI for node-llama-cpp's resolver rather than a file path. */
export function isModelUri(modelPath: string): boolean {
  return /^(hf:|huggingface:|https?:\/\/)/i.test(modelPath);
}

export interface ResolveModelOptions {
  signal?: AbortSignal;
  /** Where downloads go (default node-llama-cpp's models folder, ~/.node-llama-cpp/models). */
  directory?: string;
  /** Show node-llama-cpp's download progress bar (default: when stderr is a terminal). */
  cli?: boolean;
  /** Give up when no byte has arrived after this long (default LLJ_GGUF_CONNECT_TIMEOUT seconds, else 30 s). */
  connectTimeoutMs?: number;
}

function connectTimeout(o: ResolveModelOptions): number {
  if (o.connectTimeoutMs !== undefined) return o.connectTimeoutMs;
  const env = Number(process.env.LLJ_GGUF_CONNECT_TIMEOUT);
  return Number.isFinite(env) && env > 0 ? env * 1000 : 30_000;
}

/**
 * The local file of a model path: a file path as it is, a URI through node-llama-cpp's resolver
 * (downloading what is missing). Failures are one-line NETWORK errors naming the URI.
 */
export async function resolveModelPath(modelPath: string, options: ResolveModelOptions = {}): Promise<string> {
  if (!isModelUri(modelPath)) return modelPath;
  const { signal } = options;
  if (signal?.aborted) throw abortedError(signal.reason);
  // The resolver's downloader retries an unreachable host for minutes and does not stop on its
  // signal before the transfer begins: a transfer that has not started in time is given up here.
  let started = false, timer: NodeJS.Timeout | undefined, onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    const ms = connectTimeout(options);
    timer = setTimeout(() => {
      if (!started) reject(new LljError(`cannot download ${modelPath}: no answer within ${Math.round(ms / 1000)} s — check the network connection (or LLJ_GGUF_CONNECT_TIMEOUT), or pass a local .gguf path`, { code: "NETWORK" }));
    }, ms);
    timer.unref();
    onAbort = () => reject(abortedError(signal?.reason));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([stop, resolveModelFile(modelPath, {
      directory: options.directory, cli: options.cli ?? process.stderr.isTTY === true, signal,
      onProgress: ({ downloadedSize }) => {
        if (downloadedSize > 0) started = true;
      },
    }).catch((e: unknown) => {
      if (signal?.aborted) throw abortedError(signal.reason);
      const why = (e instanceof Error ? e.message : String(e)).split("\n")[0].replace(/^Failed to fetch manifest for resolving URI "[^"]*": /, "");
      throw new LljError(`cannot download ${modelPath}: ${why} — check the URI and the network connection, or pass a local .gguf path`, { code: "NETWORK", cause: e });
    })]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}
