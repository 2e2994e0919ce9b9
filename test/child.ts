// Runs test code in a child Node process, so that a crash (a signal such as SIGSEGV or
// SIGABRT), a hang (the timeout) or a stray exit is seen by the parent instead of killing jest.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { packageRoot } from "../src/native.js";

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** The JSON lines the child printed with report(). */
  reports: Array<Record<string, unknown>>;
}

const dir = mkdtempSync(path.join(os.tmpdir(), "llj-child-"));
let counter = 0;

/**
 * Runs an ES module body in a child. The body sees `lib` (llj-gguf's public API), `STORIES`,
 * `report(obj)` (one JSON line to the parent) and `outcome(name, promiseOrFn)`, which reports
 * how a call ended: { name, outcome: "resolved" | "rejected", code, message, nonFinite }.
 */
export function runChild(body: string, options: { timeoutMs?: number; env?: Record<string, string>; nodeArgs?: string[] } = {}): Promise<ChildResult> {
  const file = path.join(dir, `child-${process.pid}-${counter++}.mjs`);
  const index = pathToFileURL(path.join(packageRoot, "dist", "src", "index.js")).href;
  writeFileSync(file, `
import * as lib from ${JSON.stringify(index)};
const STORIES = ${JSON.stringify(process.env.LLJ_TEST_STORIES ?? path.resolve(packageRoot, "..", "shared", "models", "stories260K.gguf"))};
const report = (o) => process.stdout.write("@@" + JSON.stringify(o) + "\\n");
const nonFiniteIn = (v, depth = 0) => {
  if (depth > 4 || v === null || v === undefined) return false;
  if (typeof v === "number") return !Number.isFinite(v);
  if (ArrayBuffer.isView(v)) { for (const x of v) if (typeof x === "number" && !Number.isFinite(x)) return true; return false; }
  if (Array.isArray(v)) return v.slice(0, 64).some((x) => nonFiniteIn(x, depth + 1));
  if (typeof v === "object") return Object.entries(v).some(([k, x]) => k !== "relativeError" && nonFiniteIn(x, depth + 1));
  return false;
};
const outcome = async (name, call) => {
  try {
    const r = await (typeof call === "function" ? call() : call);
    report({ name, outcome: "resolved", nonFinite: nonFiniteIn(r) });
    return r;
  } catch (e) {
    report({ name, outcome: "rejected", lljError: e instanceof lib.LljError, code: e?.code, message: String(e?.message ?? e) });
    return undefined;
  }
};
${body}
`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...(options.nodeArgs ?? []), file], { env: { ...process.env, NODE_OPTIONS: "", ...options.env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "", timedOut = false;
    child.stdout.on("data", (b) => (stdout += b));
    child.stderr.on("data", (b) => (stderr += b));
    const timer = setTimeout(() => { timedOut = true; child.kill("SIGKILL"); }, options.timeoutMs ?? 60_000);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      const reports = stdout.split("\n").filter((l) => l.startsWith("@@")).map((l) => JSON.parse(l.slice(2)) as Record<string, unknown>);
      resolve({ status, signal, timedOut, stdout, stderr, reports });
    });
  });
}

/** Signs of a native crash in a child's stderr (ggml's asserts, V8's fatal errors, sanitizers). */
export const CRASH_SIGNATURE = /GGML_ASSERT|Uncaught N-API callback exception|Segmentation fault|Aborted|core dumped|FATAL ERROR|Fatal error|SIGSEGV|SIGABRT|terminate called|AddressSanitizer/;
