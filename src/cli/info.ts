// `llj-gguf info <model>`: what a GGUF file is, and whether llj-gguf linearizes it.
import type { Argv, CommandModule } from "yargs";
import { loadModel, type Model } from "../model.js";
import { LljError } from "../errors.js";
import { readGgufSummary, unsupportedReason, supportedArchitectures } from "../gguf.js";
import { formatModelInfo } from "../report.js";
import { gpuOption, type GlobalArgs } from "./common.js";
import { resolveModelPath } from "../model-uri.js";

interface InfoArgs extends GlobalArgs {
  model: string;
  tensors: boolean | undefined;
  json: boolean | undefined;
}

async function info(argv: InfoArgs): Promise<void> {
  let model: Model;
  const file = await resolveModelPath(argv.model);
  try {
    model = await loadModel({ modelPath: file, gpu: gpuOption(argv.gpu) });
  } catch (e) {
    // An architecture llj-gguf does not linearize: still show what the file is, and why.
    if (!(e instanceof LljError) || e.code !== "UNSUPPORTED") throw e;
    const g = await readGgufSummary(file);
    const h = g.hparams;
    const summary = { path: g.path, architecture: g.architecture, supported: false, reason: unsupportedReason(g.architecture),
      layers: h.nLayer, nEmbd: h.nEmbd, heads: h.nHead, kvHeads: h.nHeadKv, tensors: g.tensors.length };
    if (argv.json) console.log(JSON.stringify(summary, null, 2));
    else {
      console.log([
        `model         ${g.path}`,
        `architecture  ${g.architecture}`,
        `linearization not supported: ${summary.reason}`,
        `shape         ${h.nLayer} layers, d=${h.nEmbd}, ${h.nHead} heads, ${h.nHeadKv} KV heads, ${g.tensors.length} tensors`,
        `supported     ${supportedArchitectures().join(", ")}`,
      ].join("\n"));
    }
    return;
  }
  try {
    if (argv.json) {
      console.log(JSON.stringify({ path: model.path, architecture: model.architecture, linearizability: model.linearizability,
        description: model.description, hparams: model.hparams, nParams: model.nParams, sizeBytes: model.sizeBytes,
        metadata: model.metadata, tensors: model.tensors, backends: model.backends }, null, 2));
    } else {
      console.log(formatModelInfo(model, { tensors: argv.tensors }));
    }
  } finally {
    await model.dispose();
  }
}

export const infoCommand: CommandModule<GlobalArgs, InfoArgs> = {
  command: "info <model>",
  describe: "show a GGUF model's architecture, sizes, tensors and the devices found",
  builder: (y: Argv<GlobalArgs>) => y.positional("model", { type: "string", demandOption: true, describe: "a .gguf file, or a URI: hf:user/repo:quant, hf:user/repo/file.gguf, https://… (downloaded by node-llama-cpp)" })
    .option("tensors", { type: "boolean", describe: "list every tensor" })
    .option("json", { type: "boolean", describe: "print JSON" })
    .example("$0 info model.gguf --tensors", "architecture, shape, every tensor's type and device"),
  handler: info,
};
