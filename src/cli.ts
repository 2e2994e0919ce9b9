#!/usr/bin/env node
// The llj-gguf command line: one module per command in src/cli/, each thin over the API.
// Errors print one line, with a hint where one helps, and exit 1 (130 when interrupted);
// --debug adds the stack trace and the native cause.
import yargs from "yargs";
import pc from "picocolors";
import { hideBin } from "yargs/helpers";
import { LljError } from "./errors.js";
import { interruption, setQuiet } from "./cli/common.js";
import { infoCommand } from "./cli/info.js";
import { analyzeCommand } from "./cli/analyze.js";
import { reportCommand } from "./cli/report.js";
import { demoCommand } from "./cli/demo.js";
import { steerCommand } from "./cli/steer.js";
import { lensCommand } from "./cli/lens.js";

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName("llj-gguf")
    .usage("$0 <command> [options]\n\nExact local linearization of GGUF language models: the detached Jacobian of a prompt, its SVD, token attribution and layer emergence.")
    .option("gpu", { type: "string", describe: "backend: auto | cuda | vulkan | metal | false", default: "auto" })
    .option("quiet", { alias: "q", type: "boolean", describe: "no progress line and no tables: only the JSON asked for, the paths of the files written, and errors" })
    .option("debug", { type: "boolean", describe: "on an error, also print its stack trace and cause" })
    .middleware((argv) => setQuiet(argv.quiet === true))
    .command(infoCommand)
    .command(analyzeCommand)
    .command(reportCommand)
    .command(demoCommand)
    .command(steerCommand)
    .command(lensCommand)
    .example("$0 demo", "the real trained stories260K (shipped, no download): analysis, emergence table, llj-gguf-demo.html")
    .example('$0 analyze model.gguf "Once upon a time," --layers --report report.html', "your own GGUF: the same analysis and its HTML report")
    .example("$0 info model.gguf", "what a GGUF file is, and whether llj-gguf linearizes it")
    .demandCommand(1, "name a command (see --help)")
    .strict()
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .help()
    .parseAsync();
}

/** What to try next, by error code, when the message does not already say it. */
function hint(e: unknown): string {
  if (!(e instanceof LljError)) return "";
  switch (e.code) {
    case "UNSUPPORTED": return /supported:/.test(e.message) ? "" : " (llj-gguf info <model> shows what the file holds and what is supported)";
    case "OUT_OF_MEMORY": return /memory budget/.test(e.message) ? " (--plan shows every part)" : " (try a shorter prompt, --gpu false to run on the CPU's memory, or a smaller quantization)";
    case "INVALID_MODEL": return /\.gguf|GGUF/.test(e.message) ? "" : " (is it a .gguf file? llj-gguf info <file> checks it)";
    case "NATIVE": return " (--debug prints the native cause)";
    default: return "";
  }
}

main().catch((e: unknown) => {
  const msg = interruption.interrupted ? "interrupted (Ctrl-C)" : e instanceof Error ? e.message : String(e);
  // colour only on a terminal (and never with NO_COLOR)
  const c = pc.createColors(process.stderr.isTTY === true && !process.env.NO_COLOR);
  console.error(`${c.red(c.bold("llj-gguf:"))} ${msg.split("\n")[0]}${c.dim(interruption.interrupted ? "" : hint(e))}`);
  if (process.argv.includes("--debug")) {
    console.error(e instanceof Error ? e.stack : String(e));
    if (e instanceof Error && e.cause !== undefined) console.error("cause:", e.cause instanceof Error ? e.cause.stack : e.cause);
  }
  // 130: the shell's code for a run stopped by SIGINT
  process.exit(interruption.interrupted || (e instanceof LljError && e.code === "ABORTED") ? 130 : 1);
});
