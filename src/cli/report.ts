// `llj-gguf report <summary> -o FILE`: the HTML report of a saved `analyze --json` summary.
import { readFileSync } from "node:fs";
import type { Argv, CommandModule } from "yargs";
import { LljError } from "../errors.js";
import type { AnalysisSummary } from "../analyses/summary.js";
import { writeReport, wrote, type GlobalArgs } from "./common.js";

interface ReportArgs extends GlobalArgs {
  summary: string;
  output: string;
}

async function report(argv: ReportArgs): Promise<void> {
  let summary: AnalysisSummary;
  try {
    summary = JSON.parse(readFileSync(argv.summary, "utf8")) as AnalysisSummary;
  } catch (e) {
    throw new LljError(`cannot read ${argv.summary} as JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (typeof summary !== "object" || summary === null || !Array.isArray(summary.tokens) || !Array.isArray(summary.logitContributions)) {
    throw new LljError(`${argv.summary} is not an analysis summary: write one with \`llj-gguf analyze <model> <prompt> --json FILE\``);
  }
  delete (summary as { arrays?: unknown }).arrays;  // --json FILE adds the raw arrays; the report reads the summary
  wrote("report", await writeReport(argv.output, summary));
}

export const reportCommand: CommandModule<GlobalArgs, ReportArgs> = {
  command: "report <summary>",
  describe: "draw the HTML report of a summary saved with `analyze --json FILE`",
  builder: (y: Argv<GlobalArgs>) => y.positional("summary", { type: "string", demandOption: true, describe: "a JSON file written by analyze --json" })
    .option("output", { alias: "o", type: "string", demandOption: true, describe: "the HTML file to write" })
    .example("$0 report summary.json -o report.html", "the same report `analyze --report` would have written"),
  handler: report,
};
