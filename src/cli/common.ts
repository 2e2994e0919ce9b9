// What every command shares: the global options, output that honours --quiet, progress bars,
// output folders and the HTML report file.
import { accessSync, constants as fsConstants, mkdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import cliProgress from "cli-progress";
import { LljError } from "../errors.js";
import type { GpuOption } from "../backends.js";
import type { AnalysisSummary } from "../analyses/summary.js";

/** The options every command takes. */
export interface GlobalArgs {
  gpu: string;
  quiet: boolean | undefined;
}

export function gpuOption(v: string | undefined): GpuOption {
  if (v === undefined || v === "auto") return "auto";
  if (v === "false" || v === "cpu" || v === "none") return false;
  return v as GpuOption;
}

/** --quiet: no status line and no tables; only the JSON asked for on stdout, the paths of files written, and errors. */
let quiet = false;
export function setQuiet(q: boolean): void {
  quiet = q;
}
export const say = (text: string) => {
  if (!quiet) console.log(text);
};
/** A file written: a labelled line, or with --quiet the bare path (for scripts). */
export const wrote = (label: string, file: string, note = "", stream: (s: string) => void = console.log) =>
  stream(quiet ? file : `${label.padEnd(13)} ${file}${note}`);

/**
 * Progress on stderr while long stages run — only on a terminal, so pipes and logs stay clean:
 * a bar with its ETA (cli-progress) for a stage that reports its fraction, a line otherwise.
 */
export function statusLine() {
  const tty = process.stderr.isTTY === true && !quiet;
  let shown = "", bar: cliProgress.SingleBar | undefined, barName = "";
  const endBar = () => {
    bar?.stop();
    bar = undefined;
    barName = "";
  };
  const line = (text: string) => {
    endBar();
    if (!tty || text === shown) return;
    process.stderr.write(`\r\x1b[K${text}`);
    shown = text;
  };
  const show = (name: string, p?: number) => {
    if (!tty) return;
    if (p === undefined) return line(`${name}...`);
    if (barName !== name) {
      line("");
      bar = new cliProgress.SingleBar({ format: `${name.padEnd(22)} {bar} {percentage}% | ETA {eta_formatted}`, stream: process.stderr,
        clearOnComplete: true, hideCursor: false, etaBuffer: 30, fps: 10 }, cliProgress.Presets.shades_classic);
      bar.start(1000, 0);
      barName = name;
    }
    bar?.update(Math.round(Math.min(1, Math.max(0, p)) * 1000));
  };
  return {
    stage: (name: string) => (p?: number) => show(name, p),
    /** As summarize's onStage wants it. */
    onStage: show,
    clear: () => line(""),
    /** A free-form line (streamed text). */
    line,
  };
}

/**
 * The report file: always drawn from the summary as `--json` writes it (a JSON round trip),
 * so `report summary.json` redraws the very same bytes.
 */
export async function writeReport(file: string, summary: AnalysisSummary): Promise<string> {
  const out = path.resolve(file);
  const { renderHtmlReport } = await import("../html-report.js");  // Vega loads only when a report is drawn
  writeFileSync(out, await renderHtmlReport(JSON.parse(JSON.stringify(summary)) as AnalysisSummary));
  return out;
}

/**
 * Creates an output folder one level at a time from its nearest existing ancestor, which must
 * be a writable folder: a recursive mkdir under /proc or /sys can loop forever instead of failing.
 */
export function makeOutputDir(dir: string): void {
  const target = path.resolve(dir);
  const missing: string[] = [];
  let at = target;
  for (;;) {
    let st;
    try {
      st = statSync(at);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOTDIR") throw new LljError(`--npy ${dir}: part of the path is a file, not a folder`);
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new LljError(`--npy ${dir}: cannot use ${at} (${(e as Error).message})`);
      const up = path.dirname(at);
      if (up === at || missing.length > 64) throw new LljError(`--npy ${dir}: no existing parent folder`);
      missing.push(at);
      at = up;
      continue;
    }
    if (!st.isDirectory()) throw new LljError(`--npy ${dir}: ${at} is not a folder`);
    break;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      throw new LljError(`--npy ${dir}: cannot create ${d} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  try {
    accessSync(target, fsConstants.W_OK);
  } catch {
    throw new LljError(`--npy ${dir}: the folder is not writable`);
  }
}

/** Set by Ctrl-C: whatever then fails, the run was interrupted. */
export const interruption = { interrupted: false };
