// Human-readable text for the CLI. Pure functions of API results, so they are testable.
import type { Model, ReferenceForward } from "./model.js";
import type { AnalysisSummary } from "./analyses/summary.js";
import Table from "cli-table3";

/**
 * Rows aligned in columns without borders, two spaces apart, each line after `indent`. cli-table3
 * measures display width, so tokens in wide scripts (CJK, emoji) keep the columns straight.
 */
export function table(rows: string[][], align: Array<"left" | "right">, head?: string[], indent = "  "): string[] {
  const none = { top: "", "top-mid": "", "top-left": "", "top-right": "", bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "",
    left: "", "left-mid": "", mid: "", "mid-mid": "", right: "", "right-mid": "", middle: "  " };
  const t = new Table({ chars: none, colAligns: align, style: { head: [], border: [], "padding-left": 0, "padding-right": 0, compact: true }, ...(head ? { head } : {}) });
  t.push(...rows);
  return t.toString().split("\n").map((l) => indent + l.trimEnd());
}

/** A token's JSON text, cut with an ellipsis beyond w characters. */
const cut = (text: string, w: number) => {
  const t = JSON.stringify(text);
  return t.length > w ? t.slice(0, w - 1) + "…" : t;
};

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function countBy<T>(items: readonly T[], key: (t: T) => string): string {
  const m = new Map<string, number>();
  for (const it of items) m.set(key(it), (m.get(key(it)) ?? 0) + 1);
  return [...m].map(([k, v]) => `${k} ×${v}`).join(", ");
}

export function formatModelInfo(model: Model, options: { tensors?: boolean } = {}): string {
  const h = model.hparams;
  const lines = [
    `model         ${model.path} (${formatBytes(model.gguf.fileSize)})`,
    `architecture  ${h.architecture}`,
    `linearization ${model.linearizability.ok
      ? model.linearizability.decomposition === "affine"
        ? "exact, affine: y = Σᵢ Jᵢxᵢ + c (biases on the linear path)"
        : "exact, linear: y = Σᵢ Jᵢxᵢ"
      : `refused: ${model.linearizability.reason}`}`,
    `description   ${model.description}, ${model.nParams.toLocaleString("en-US")} parameters`,
    `shape         ${h.nLayer} layers, d=${h.nEmbd}, ${h.nHead} heads, ${h.nHeadKv} KV heads (head dim ${h.headDim}), ` +
      `FFN ${h.nFf}, vocab ${h.nVocab}, context ${h.contextLength}`,
    h.learnedPositions ? "positions     learned (position_embd, added to the token embeddings)"
      : `rope          ${h.rope.dimensionCount} dims, base ${h.rope.freqBase}, scaling ${h.rope.scalingType}` +
        (h.rope.hasFreqFactors ? ", frequency factors" : ""),
    `norm          ${h.norm === "layer" ? "LayerNorm (with bias)" : "RMSNorm"}, eps ${h.normEps.toExponential(2)}`,
    `LM head       ${h.tiedEmbeddings ? "tied to token_embd" : "output.weight (untied)"}`,
    `tensors       ${model.tensors.length}: ${countBy(model.tensors, (t) => t.type)}`,
    `placement     ${countBy(model.tensors, (t) => t.device)}`,
    ...(() => {
      const ignored = model.linearizability.ignoredTensors;
      return ignored.length ? [`ignored       ${ignored.length} tensors llama.cpp loads but never applies: ${ignored.slice(0, 3).join(", ")}${ignored.length > 3 ? ", ..." : ""}`] : [];
    })(),
    `llama.cpp     ${model.backends.llamaCppTag} (${model.backends.customBuild ? "custom build" : "prebuilt"}, ${model.backends.libDir})`,
    `devices       ${model.backends.devices.map((d) => `${d.name} [${d.type}] ${d.description}`).join("; ")}`,
    `GPU backend   ${model.backends.gpuBackends.length ? model.backends.gpuBackends.join(", ") : "none (CPU only)"}`,
    `BLAS          ${model.backends.blas ? "OpenBLAS (ggml BLAS backend) for the linear passes" : "none: the linear passes use ggml's CPU matmul (install libopenblas-dev and rebuild for faster passes)"}`,
  ];
  if (options.tensors) {
    lines.push("", ...table(model.tensors.map((t) => [t.name, t.type, `[${t.shape.join(", ")}]`, t.device]), ["left", "left", "left", "left"],
      ["tensor", "type", "shape", "device"], ""));
  }
  return lines.join("\n");
}

export function formatForward(model: Model, f: ReferenceForward): string {
  const order = Array.from(f.logits.keys()).sort((a, b) => f.logits[b] - f.logits[a]).slice(0, 5);
  const pieces = model.tokenPieces(order);
  return [
    `prompt        ${JSON.stringify(model.detokenize(f.tokens, { removeSpecial: true }).replace(/^ /, ""))} (${f.nTokens} tokens)`,
    `next token    ${JSON.stringify(f.topTokenText)} (id ${f.topToken})`,
    `top logits    ${order.map((t, i) => `${JSON.stringify(pieces[i])} ${f.logits[t].toFixed(2)}`).join(", ")}`,
  ].join("\n");
}

function bar(value: number, max: number, width = 24): string {
  const n = max > 0 ? Math.round((value / max) * width) : 0;
  return "█".repeat(n) + " ".repeat(width - n);
}

export function formatAnalysis(a: AnalysisSummary): string {
  const lines = [
    `prompt        ${JSON.stringify(a.prompt)} (${a.tokens.length} tokens)`,
    `predicted     ${JSON.stringify(a.predictedTokenText)} (id ${a.predictedToken}, logit ${a.predictedLogit.toFixed(3)})`,
    `detached      ‖Σᵢ Jᵢxᵢ${a.affine ? " + c" : ""} − y‖/‖y‖ = ${a.detached.relativeError.toExponential(2)}` +
      `  (max abs ${a.detached.maxAbsError.toExponential(2)}, ${a.precision})  ` +
      (a.detached.relativeError <= 1e-4 ? "the linear system reproduces the output"
        : a.precision === "fast" ? "quantized kernels round the activations too: --precision exact gives the exact system"
        : "the linear system does NOT reproduce the output to F32 rounding"),
    `non-detached  ‖f′(x)·x − y‖/‖y‖ = ${a.nonDetached.relativeError.toExponential(2)}` +
      `  the ordinary Jacobian does not`,
    `bias term     ${a.biasTermRelativeNorm === null ? "none: the map is linear" : `‖c‖/‖y‖ = ${a.biasTermRelativeNorm.toExponential(2)} (affine model)`}`,
    "",
    `each input token: its contribution to y (‖Jᵢxᵢ‖) and to the logit of ${JSON.stringify(a.predictedTokenText)} (W_U·Jᵢxᵢ)`,
  ];
  const max = Math.max(...a.contributionNorms);
  const w = 24;
  const rows = a.contributionNorms.map((v, i) => [String(i), cut(a.tokenTexts[i], w), v.toFixed(4), a.logitContributions[i].toFixed(3), bar(v, max)]);
  if (a.logitBiasContribution !== 0) rows.push(["", "bias c", "", a.logitBiasContribution.toFixed(3), ""]);
  lines.push(...table(rows, ["right", "left", "right", "right", "left"], ["pos", "token", "‖Jᵢxᵢ‖", "logit", ""]), "");
  if (a.singular) {
    lines.push("leading singular vectors of the last token's detached Jacobian (u: through the LM head, v: nearest input embeddings)" +
      (a.singularNote ? ` — ${a.singularNote}` : ""));
    a.singular.values.forEach((s, j) => {
      lines.push(`  σ${j + 1} = ${s.toFixed(3).padStart(8)}   u → ${a.singular!.u[j].map((t) => JSON.stringify(t)).join(" ")}`);
      lines.push(`  ${"".padStart(13)}   v → ${a.singular!.v[j].map((t) => JSON.stringify(t)).join(" ")}`);
    });
  }
  if (a.positions && a.positions.length > 1) {
    lines.push("", "every input position i: σ1 of its own Jacobian J_i, u1 through the LM head, v1's nearest input embeddings");
    lines.push(...table(a.positions.map((p) => [String(p.position), cut(a.tokenTexts[p.position] ?? "", w), `σ1 = ${p.sigma1.toFixed(3)}`,
      `u → ${p.u.slice(0, 3).map((x) => JSON.stringify(x)).join(" ")}`, `v → ${p.v.slice(0, 3).map((x) => JSON.stringify(x)).join(" ")}`]),
    ["right", "left", "right", "left", "left"]));
  }
  if (a.emergence) {
    lines.push("", "emergence: per layer, the leading left singular vector of the last token's Jacobian of the residual stream",
      "after that layer (through the final norm), decoded through the LM head");
    lines.push(...table(a.emergence.map((r) => [`layer ${r.layer}`, `σ1 = ${r.value.toFixed(3)}`, r.tokens.map((t) => JSON.stringify(t)).join(" ")]),
      ["right", "right", "left"]));
  }
  lines.push("", `(${a.seconds.toFixed(2)} s)`);
  return lines.join("\n");
}
