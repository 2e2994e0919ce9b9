// The HTML page of a Jacobian-lens readout (`lens show --report`): the layer × position grid
// of the tokens a lens reads from a prompt, each cell the top-1 token coloured by its
// probability (the top 5 on hover), and below it the model's own next-token prediction at the
// same positions. Drawn from plain data (the readout cells, as `lens show --json` prints them)
// the way the analysis report is: one self-contained file, the grid a Vega-Lite chart rendered
// to SVG in Node, no script and no network request.
import type { LensToken } from "./lens.js";
import { invalid } from "./errors.js";

/** One cell of the readout: what layer `layer` reads at `position`, best token first. */
export interface LensReportCell {
  layer: number;
  position: number;
  tokens: LensToken[];
}

export interface LensReportData {
  prompt: string;
  /** The text of each prompt token, by position (column headers). */
  tokenTexts: string[];
  model: { path: string; description: string; architecture: string; nLayer: number; nEmbd: number; nVocab: number };
  lens: {
    file: string;
    estimator: string;
    nPrompts: number;
    sourceLayers: number[];
    dModel: number;
    /** The file's provenance (architecture, minPosition...), shown as it is. */
    metadata?: Record<string, string | number | boolean | null>;
  };
  /** The lens's readout: one cell per (source layer, position) drawn. */
  readout: LensReportCell[];
  /** The model's own next-token prediction (the last layer, read through the identity) per position: the grid's last row. */
  baseline?: LensReportCell[];
}

/** Tokens per cell on hover. */
export const LENS_REPORT_TOP = 5;

const percent = (p: number) => `${(p * 100).toFixed(p < 1e-3 ? 3 : 1)}%`;

function checkCells(name: string, cells: unknown, nTokens: number): LensReportCell[] {
  if (!Array.isArray(cells)) throw invalid(`${name} must be an array of { layer, position, tokens }`);
  const seen = new Set<string>();
  return cells.map((c: LensReportCell, i) => {
    if (!c || !Number.isInteger(c.layer) || !Number.isInteger(c.position) || c.position < 0 || c.position >= nTokens) {
      throw invalid(`${name}[${i}] needs an integer layer and a position in [0, ${nTokens})`);
    }
    if (!Array.isArray(c.tokens) || c.tokens.length === 0) throw invalid(`${name}[${i}] has no tokens`);
    const key = `${c.layer}/${c.position}`;
    if (seen.has(key)) throw invalid(`${name} has layer ${c.layer} at position ${c.position} twice`);
    seen.add(key);
    return c;
  });
}

/** The page as one HTML document. Deterministic: the same data gives the same bytes. */
export async function lensReport(data: LensReportData): Promise<string> {
  if (!data || typeof data !== "object" || !Array.isArray(data.tokenTexts)) throw invalid("lensReport needs { prompt, tokenTexts, model, lens, readout }");
  const n = data.tokenTexts.length;
  const readout = checkCells("readout", data.readout, n);
  if (readout.length === 0) throw invalid("readout is empty");
  const baseline = data.baseline === undefined ? [] : checkCells("baseline", data.baseline, n);
  // Vega loads only when a page is drawn (as for the analysis report)
  const { chart, chartSvg, esc, figure, htmlPage, showToken } = await import("./html-report.js");

  const positions = [...new Set([...readout, ...baseline].map((c) => c.position))].sort((a, b) => a - b);
  const layers = [...new Set(readout.map((c) => c.layer))].sort((a, b) => a - b);
  const predicted = new Map(baseline.map((c) => [c.position, c.tokens[0]] as const));
  const outputLayer = baseline[0]?.layer ?? data.model.nLayer - 1;
  const column = (p: number) => `${p} ${showToken(data.tokenTexts[p])}`;
  const outputRow = `output (layer ${outputLayer})`;

  const values = [
    ...readout.map((c) => ({ c, row: `layer ${c.layer}`, order: c.layer, model: false })),
    ...baseline.map((c) => ({ c, row: outputRow, order: Number.MAX_SAFE_INTEGER, model: true })),
  ].map(({ c, row, order, model }) => {
    const top = c.tokens[0], p = predicted.get(c.position);
    const agrees = !model && p !== undefined && p.id === top.id;
    const list = c.tokens.slice(0, LENS_REPORT_TOP).map((t) => `${showToken(t.text)} ${percent(t.probability)}`).join(" · ");
    const what = model ? " (the model's own output)" : agrees ? " (agrees with the model's output)" : "";
    return {
      row, order, column: column(c.position), position: c.position, text: showToken(top.text), probability: top.probability, agrees,
      tip: `layer ${c.layer} · position ${c.position} ${JSON.stringify(data.tokenTexts[c.position])}${what}: ${list}`,
    };
  });
  // Cells as wide as the longest top-1 token, within bounds; longer ones end in "…". Vega, with
  // no canvas in Node, measures text as 0.8·fontSize per character: sized by that estimate.
  const fontSize = 11, longest = Math.max(1, ...values.map((v) => [...v.text].length));
  const cellWidth = Math.max(44, Math.min(150, Math.ceil(0.8 * fontSize * longest) + 12)), cellHeight = 26;
  const nRows = layers.length + (baseline.length > 0 ? 1 : 0);
  const x = { field: "column", type: "ordinal" as const, sort: { field: "position" }, title: "prompt token (position)",
    axis: { orient: "top" as const, labelAngle: -40, labelAlign: "left" as const, labelFont: "ui-monospace, Menlo, Consolas, monospace" } };
  const y = { field: "row", type: "ordinal" as const, sort: { field: "order" }, title: null };
  const svg = await chartSvg("lens", {
    width: cellWidth * positions.length, height: cellHeight * nRows, data: { values },
    layer: [
      { mark: { type: "rect" },
        encoding: {
          x, y,
          color: { field: "probability", type: "quantitative", scale: { scheme: "blues", domain: [0, 1] }, title: "p(top-1)", legend: { format: ".0%" } },
          // cells that agree with the model's own prediction outlined
          stroke: { condition: { test: "datum.agrees", value: "#d9480f" }, value: "white" },
          strokeWidth: { condition: { test: "datum.agrees", value: 2.5 }, value: 1 },
          description: { field: "tip" },
        } },
      { mark: { type: "text", font: "ui-monospace, Menlo, Consolas, monospace", fontSize, limit: cellWidth - 6, aria: false },
        encoding: {
          x, y, text: { field: "text" },
          color: { condition: { test: "datum.probability > 0.55", value: "white" }, value: "#222" },
        } },
    ],
  });

  const agreement = baseline.length === 0 ? "" : `<h3>Agreement with the model's output</h3>
<table class="agree"><thead><tr><th>layer</th><th>top-1 = the model's prediction</th></tr></thead><tbody>${layers.map((l) => {
    const cells = readout.filter((c) => c.layer === l && predicted.has(c.position));
    const k = cells.filter((c) => c.tokens[0].id === predicted.get(c.position)!.id).length;
    return `<tr data-layer="${l}"><td class="num">${l}</td><td>${k} of ${cells.length} positions</td></tr>`;
  }).join("")}</tbody></table>`;

  const m = data.model, lens = data.lens;
  const last = predicted.get(n - 1);
  const file = (f: string) => f.split(/[\\/]/).pop() ?? f;
  const stats = [
    ["lens-file", "lens file", `<span class="mono">${esc(file(lens.file))}</span>`, esc(lens.file)],
    ["estimator", "estimator", esc(lens.estimator), { jlens: "the ordinary Jacobian (J-lens)", rlens: "the relevance rules (R-lens)", detached: "the detached map" }[lens.estimator] ?? ""],
    ["n-prompts", "prompts fitted", String(lens.nPrompts), "corpus prompts averaged"],
    ["source-layers", "source layers", esc(lens.sourceLayers.join(", ")), `of the model's ${m.nLayer}`],
    ["d-model", "d_model", String(lens.dModel), "each J_l is d × d"],
  ];
  const provenance = Object.entries(lens.metadata ?? {}).filter(([k]) => k !== "estimator").map(([k, v]) => `${esc(k)} ${esc(String(v))}`).join(" · ");
  const header = `<header>
<p class="kicker">llj-gguf · Jacobian lens readout</p>
<h1>${esc(JSON.stringify(data.prompt))}${last ? ` → <span class="pred">${esc(showToken(last.text))}</span>` : ""}</h1>
<p class="meta" data-meta="model">${esc(file(m.path))} — ${esc(m.description)} · ${esc(m.architecture)} · d = ${m.nEmbd} · ${m.nLayer} layers · vocabulary ${m.nVocab} · ${n} tokens</p>
<p class="lede">Each source layer's residual stream h_l, carried to the last layer by the lens matrix J_l (the corpus average of ∂h_final/∂h_l) and read through the model's own final norm and LM head: W_U·norm(J_l·h_l) (Gurnee et al. 2026). In token labels, ␣ is a space.</p>
</header>
<div class="stats">${stats.map(([key, k, v, note]) => `<div class="stat" data-meta="${key}"><div class="k">${k}</div><div class="v">${v}</div><div class="n">${note}</div></div>`).join("")}</div>
${provenance ? `<p class="meta" data-meta="provenance">lens metadata: ${provenance}</p>` : ""}`;
  const explanation = `Rows are the lens's source layers${baseline.length ? `, and last the model's own next-token prediction (layer ${outputLayer} read through the identity)` : ""}; columns are the prompt's tokens. Each cell shows the top-1 token read at that layer and position, coloured by its probability${baseline.length ? "; outlined cells agree with the model's own prediction at that position" : ""}. Hover a cell for its top ${LENS_REPORT_TOP} tokens.`;
  const body = `${header}
${figure("readout", "Layer × position readout", explanation, `${chart("lens", svg)}${agreement}`)}
<footer>Made by llj-gguf (<code>npx llj-gguf lens show MODEL --lens ${esc(file(lens.file))} PROMPT --report FILE.html</code>). Self-contained: no script, no network request. Probabilities: the softmax of each cell's readout over the whole vocabulary (${m.nVocab} tokens).</footer>`;
  // hover reaches the cell under a token's text
  const style = `figure.chart[data-chart="lens"] text { pointer-events: none; }\n`;
  return htmlPage(`llj-gguf lens: ${esc(JSON.stringify(data.prompt))}`, body, style);
}
