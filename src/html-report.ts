// The HTML report of an analysis: one self-contained file (inline CSS and SVG, no script, no
// network request), drawn from the AnalysisSummary alone — the object `analyze --json`
// writes — so a report made later from a saved summary is the same file. Charts are
// Vega-Lite specs rendered to SVG in Node (no browser needed). The page shell and the chart
// helpers are exported for the other reports drawn the same way (src/lens-report.ts).
import * as vega from "vega";
import { compile, type TopLevelSpec, type Config } from "vega-lite";
import type { AnalysisSummary } from "./analyses/summary.js";

/** The diverging scheme of every signed quantity (contributions, J entries): red < 0 < blue. */
export const DIVERGING = "redblue";
const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
const CHART_CONFIG: Config = {
  font: FONT,
  view: { stroke: null },
  axis: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 500 as const, titleColor: "#333", labelColor: "#444", gridColor: "#eee", domainColor: "#999", tickColor: "#999" },
  legend: { labelFontSize: 11, titleFontSize: 12, titleFontWeight: 500 },
};

export const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
/** A token as a label: spaces made visible (leading spaces carry meaning in these vocabularies). */
export const showToken = (t: string) => (t === "" ? "∅" : t.replace(/ /g, "␣").replace(/\n/g, "⏎").replace(/\t/g, "⇥")
  // other control characters (byte tokens) as escapes: fonts draw them as empty boxes
  .replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`));
export const fmt = (x: number, digits = 3) => (Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(digits) : x.toExponential(1));
const signed = (x: number, digits = 3) => (x >= 0 ? "+" : "−") + fmt(Math.abs(x), digits);

/** Vega-Lite warns about specs it had to repair: ours are fixed, so a warning is a bug (tests catch it). */
const strictLogger = {
  level(): never { throw new Error("not used"); },
  error(...args: unknown[]): never { throw new Error(`vega-lite: ${args.join(" ")}`); },
  warn(...args: unknown[]): never { throw new Error(`vega-lite: ${args.join(" ")}`); },
  info() { return strictLogger; },
  debug() { return strictLogger; },
};

/**
 * A Vega-Lite spec as inline SVG. Element ids (gradients, clip paths) get the chart's
 * prefix, so ids stay unique in the page and do not depend on what the process rendered
 * before (Vega numbers them with a global counter). Each data mark's description moves
 * from aria-label into an SVG <title>, which browsers show on hover and read as its name
 * (and which halves the size of a heat map's cells).
 */
export async function chartSvg(key: string, spec: TopLevelSpec): Promise<string> {
  const compiled = compile({ ...spec, config: { ...CHART_CONFIG, ...spec.config } } as TopLevelSpec, { logger: strictLogger as never });
  const view = new vega.View(vega.parse(compiled.spec), { renderer: "none", logLevel: vega.Error });
  try {
    let svg = await view.toSVG();
    const ids = new Map<string, string>();
    for (const [, id] of svg.matchAll(/ id="([^"]+)"/g)) ids.set(id, `${key}-${ids.size}`);
    svg = svg.replace(/ id="([^"]+)"/g, (_, id: string) => ` id="${ids.get(id)}"`)
      .replace(/url\(#([^)]+)\)/g, (m, id: string) => (ids.has(id) ? `url(#${ids.get(id)})` : m));
    svg = svg.replace(/<(path|line|text) aria-label="([^"]*)" role="graphics-symbol" aria-roledescription="[^"]*"([^>]*?)\/>/g, "<$1$3><title>$2</title></$1>");
    return svg;
  } finally {
    view.finalize();
  }
}

export function figure(key: string, title: string, explanation: string, body: string): string {
  return `<section class="card" id="${key}">
<h2>${title}</h2>
<p class="explain">${explanation}</p>
${body}
</section>`;
}

export function chart(key: string, svg: string): string {
  return `<figure class="chart" data-chart="${key}">${svg}</figure>`;
}

function chips(tokens: string[], highlight?: string): string {
  return tokens.map((t) => `<span class="chip${t === highlight ? " hit" : ""}">${esc(showToken(t))}</span>`).join("");
}

/** Labels for positions: "3 ␣a" (position first, so repeated tokens stay distinct). */
const positionLabel = (a: AnalysisSummary, i: number) => `${i} ${showToken(a.tokenTexts[i] ?? "")}`;

function header(a: AnalysisSummary): string {
  const m = a.model;
  const shape = m ? `${esc(m.architecture)} · d = ${m.nEmbd} · ${m.nLayer} layers · vocabulary ${m.nVocab}` : "";
  return `<header>
<p class="kicker">llj-gguf · detached Jacobian report</p>
<h1>${esc(JSON.stringify(a.prompt))} → <span class="pred">${esc(showToken(a.predictedTokenText))}</span></h1>
<p class="meta">${m ? `${esc(m.path.split(/[\\/]/).pop() ?? m.path)} — ${esc(m.description)} · ${shape} · ` : ""}${a.tokens.length} tokens · ${esc(a.precision)} precision · ${a.affine ? "affine: y = Σᵢ Jᵢxᵢ + c" : "linear: y = Σᵢ Jᵢxᵢ"} · analysed in ${a.seconds.toFixed(2)} s</p>
<p class="lede">The network is frozen at this prompt (norm scales, attention probabilities and activation gates detached), which leaves a linear map of the input embeddings that reproduces the model's output y exactly. Everything below is a property of that map, the <em>detached Jacobian</em> (Golden 2025, arXiv 2505.24293). In token labels, ␣ is a space.</p>
</header>`;
}

function stats(a: AnalysisSummary): string {
  const p = a.topPredictions?.[0];
  const cells = [
    ["predicted next token", `<span class="mono">${esc(showToken(a.predictedTokenText))}</span>`, `id ${a.predictedToken}, logit ${fmt(a.predictedLogit)}${p ? `, p = ${(p.probability * 100).toFixed(1)}%` : ""}`],
    ["detached reconstruction", a.detached.relativeError.toExponential(2), `‖Σᵢ Jᵢxᵢ${a.affine ? " + c" : ""} − y‖ / ‖y‖${a.detached.relativeError <= 1e-4 ? ": exact to float32 rounding" : ""}`],
    ["ordinary Jacobian", a.nonDetached.relativeError.toExponential(2), "‖f′(x)·x − y‖ / ‖y‖: does not reconstruct y"],
  ];
  if (a.singular) cells.push(["σ₁ of J_last", fmt(a.singular.values[0]), `u₁ → ${esc(showToken(a.singular.u[0][0] ?? ""))}, v₁ → ${esc(showToken(a.singular.v[0][0] ?? ""))}`]);
  return `<div class="stats">${cells.map(([k, v, note]) => `<div class="stat"><div class="k">${k}</div><div class="v">${v}</div><div class="n">${note}</div></div>`).join("")}</div>`;
}

async function predictions(a: AnalysisSummary): Promise<string> {
  if (!a.topPredictions) return "";
  const seen = new Map<string, number>();
  for (const p of a.topPredictions) seen.set(p.text, (seen.get(p.text) ?? 0) + 1);
  const values = a.topPredictions.map((p, r) => ({
    rank: r, label: showToken(p.text) + ((seen.get(p.text) ?? 0) > 1 ? ` #${p.id}` : ""), probability: p.probability,
    predicted: p.id === a.predictedToken ? "predicted" : "alternative",
    tip: `${JSON.stringify(p.text)} (id ${p.id}): p = ${(p.probability * 100).toFixed(2)}%, logit ${fmt(p.logit)}`,
  }));
  const svg = await chartSvg("predictions", {
    width: 560, height: 22 * values.length, data: { values },
    layer: [
      { mark: { type: "bar", cornerRadiusEnd: 2 },
        encoding: {
          y: { field: "label", type: "nominal", sort: null, title: null, axis: { labelFont: "ui-monospace, Menlo, Consolas, monospace", labelFontSize: 12 } },
          x: { field: "probability", type: "quantitative", title: "probability", axis: { format: ".0%" }, scale: { domain: [0, 1] } },
          color: { field: "predicted", type: "nominal", scale: { domain: ["predicted", "alternative"], range: ["#2f6fb5", "#b9c6d6"] }, legend: null },
          description: { field: "tip" },
        } },
      { mark: { type: "text", align: "left", dx: 4, fontSize: 11, color: "#333" },
        encoding: {
          y: { field: "label", type: "nominal", sort: null },
          x: { field: "probability", type: "quantitative" },
          text: { field: "probability", type: "quantitative", format: ".1%" },
        } },
    ],
  });
  return figure("prediction", "Prediction", "The next-token distribution of the last position (softmax of the logits), most likely first.",
    chart("predictions", svg));
}

async function contributions(a: AnalysisSummary): Promise<string> {
  const c = a.logitContributions;
  const m = Math.max(1e-12, ...c.map(Math.abs));
  const color = vega.scheme(DIVERGING) as (t: number) => string;
  const strip = c.map((v, i) => {
    const t = (v / m + 1) / 2;  // symmetric domain [−m, m] → [0, 1]
    const text = a.tokenTexts[i] ?? "";
    return `<span class="tok${Math.abs(v / m) > 0.55 ? " dark" : ""}" style="background:${color(t)}" data-position="${i}" data-value="${v}" title="position ${i} ${esc(JSON.stringify(text))}: ${signed(v)} to the logit of ${esc(JSON.stringify(a.predictedTokenText))}">${esc(text === "" ? "∅" : text)}</span>`;
  }).join("");
  const legend = `<div class="scale"><span>${signed(-m, 2)}</span><span class="bar" style="background:linear-gradient(90deg, ${[0, 0.25, 0.5, 0.75, 1].map((t) => color(t)).join(", ")})"></span><span>${signed(m, 2)}</span></div>`;
  const sum = c.reduce((s, v) => s + v, 0);
  const values = c.map((v, i) => ({ position: i, label: positionLabel(a, i), value: v, norm: a.contributionNorms[i],
    tip: `position ${positionLabel(a, i)}: ${signed(v)} to the logit; ‖Jᵢxᵢ‖ = ${fmt(a.contributionNorms[i])}` }));
  const svg = await chartSvg("contributions", {
    width: Math.max(560, Math.min(900, 44 * c.length)), height: 200, data: { values },
    mark: { type: "bar", stroke: "#777", strokeWidth: 0.5 },
    encoding: {
      x: { field: "label", type: "ordinal", sort: { field: "position" }, title: "input position", axis: { labelAngle: -40, labelFont: "ui-monospace, Menlo, Consolas, monospace" } },
      y: { field: "value", type: "quantitative", title: `W_U[${showToken(a.predictedTokenText)}] · Jᵢxᵢ` },
      color: { field: "value", type: "quantitative", scale: { scheme: DIVERGING, domain: [-m, m] }, legend: null },
      description: { field: "tip" },
    },
  });
  const bias = a.logitBiasContribution !== 0 ? ` plus the bias term's ${signed(a.logitBiasContribution)}` : "";
  return figure("attribution", "Which input tokens drive the prediction",
    `Each token's exact contribution W_U[${esc(showToken(a.predictedTokenText))}]·Jᵢxᵢ to the predicted logit (blue raises it, red lowers it; hover for the value). The contributions sum${bias} to the logit, ${fmt(sum + a.logitBiasContribution)} = ${fmt(a.predictedLogit)}.`,
    `<div class="strip">${strip}</div>${legend}${chart("contributions", svg)}`);
}

async function reconstruction(a: AnalysisSummary): Promise<string> {
  const r = a.reconstruction;
  if (!r) return "";
  const detachedName = `detached Σᵢ Jᵢxᵢ${a.affine ? " + c" : ""}`, ordinaryName = "ordinary f′(x)·x";
  const values = [
    ...r.output.map((y, k) => ({ y, value: r.detached[k], series: detachedName, tip: `component ${k}: y = ${fmt(y, 4)}, detached ${fmt(r.detached[k], 4)}` })),
    ...r.output.map((y, k) => ({ y, value: r.nonDetached[k], series: ordinaryName, tip: `component ${k}: y = ${fmt(y, 4)}, ordinary ${fmt(r.nonDetached[k], 4)}` })),
  ];
  const lo = Math.min(...r.output), hi = Math.max(...r.output);
  const svg = await chartSvg("reconstruction", {
    width: 420, height: 420,
    layer: [
      { data: { values: [{ y: lo, value: lo }, { y: hi, value: hi }] }, mark: { type: "line", color: "#999", strokeDash: [4, 3], strokeWidth: 1 },
        encoding: { x: { field: "y", type: "quantitative" }, y: { field: "value", type: "quantitative" } } },
      { data: { values }, mark: { type: "point", filled: true, size: 26, opacity: 0.75 },
        encoding: {
          x: { field: "y", type: "quantitative", title: "y (model output, each of the d components)" },
          y: { field: "value", type: "quantitative", title: "reconstruction from x" },
          color: { field: "series", type: "nominal", scale: { domain: [detachedName, ordinaryName], range: ["#2f6fb5", "#e07b39"] }, legend: { orient: "top-left", title: null, labelLimit: 400 } },
          shape: { field: "series", type: "nominal", scale: { domain: [detachedName, ordinaryName], range: ["circle", "triangle-up"] }, legend: { orient: "top-left", title: null, labelLimit: 400 } },
          description: { field: "tip" },
        } },
    ],
  });
  const errors = `<div class="errs"><div><span class="dot" style="background:#2f6fb5"></span>detached: ‖Σᵢ Jᵢxᵢ${a.affine ? " + c" : ""} − y‖/‖y‖ = <b>${a.detached.relativeError.toExponential(2)}</b> <span class="muted">(max abs ${a.detached.maxAbsError.toExponential(1)})</span></div>
<div><span class="dot" style="background:#e07b39"></span>ordinary: ‖f′(x)·x − y‖/‖y‖ = <b>${a.nonDetached.relativeError.toExponential(2)}</b> <span class="muted">(${a.nonDetached.method === "ordinary" ? "the ordinary linearization's JVP" : `central difference, ε = ${a.nonDetached.epsilon}`})</span></div></div>`;
  return figure("fig2", "Exact reconstruction (the paper's Fig. 2)",
    `Each point is one of the d = ${r.output.length} components of the output y against its reconstruction from the input embeddings. The detached Jacobian's points lie on the diagonal: the linear map is the network at this prompt. The ordinary Jacobian's do not.`,
    `<div class="row">${chart("reconstruction", svg)}${errors}</div>`);
}

async function spectra(a: AnalysisSummary): Promise<string> {
  const s = a.spectra;
  if (!s || s.rows.length === 0) return "";
  const last = a.tokens.length - 1;
  const values = s.rows.flatMap((row) => {
    const top = row.values[0] ?? 0;
    // A log axis cannot show zeros; values below 1e-9·σ₁ are rank deficiency, not signal.
    return row.values.filter((v) => v > top * 1e-9).map((v, j) => ({
      j: j + 1, sigma: v, position: row.position, label: positionLabel(a, row.position),
      tip: `J of position ${positionLabel(a, row.position)}: σ${j + 1} = ${v.toExponential(3)}`,
    }));
  });
  if (values.length === 0) return "";  // J = 0: nothing to draw on a log scale
  // Decades only: a log axis's default grid (every 1..9 × 10^k) is too dense to read.
  const lo = Math.floor(Math.log10(Math.min(...values.map((v) => v.sigma))));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...values.map((v) => v.sigma)))));
  const decades = Array.from({ length: hi - lo + 1 }, (_, i) => 10 ** (lo + i));
  // Earlier positions along viridis (its light yellow end left out), the last one in the accent colour and drawn thicker on top.
  const rows = s.rows.map((r) => r.position);
  const viridis = vega.scheme("viridis") as (t: number) => string;
  const range = rows.map((p, r) => (p === last ? "#d9480f" : viridis(rows.length > 2 ? (0.8 * r) / (rows.length - 2) : 0)));
  const domain = rows.map((p) => positionLabel(a, p));
  const color = { field: "label", type: "ordinal" as const, scale: { domain, range }, title: "position",
    legend: rows.length > 16 ? null : { labelFont: "ui-monospace, Menlo, Consolas, monospace" } };
  const x = { field: "j", type: "quantitative" as const, title: "index j", scale: { domainMin: 1, nice: false } };
  const y = { field: "sigma", type: "quantitative" as const, title: "σⱼ (log scale)", scale: { type: "log" as const, domain: [decades[0], decades[decades.length - 1]] },
    axis: { values: decades, format: ".0e", grid: true } };
  const svg = await chartSvg("spectra", {
    width: 560, height: 300, data: { values },
    layer: [
      { transform: [{ filter: `datum.position !== ${last}` }], mark: { type: "line", point: { size: 10, filled: true }, strokeWidth: 1.2, opacity: 0.85 },
        encoding: { x, y, color, description: { field: "tip" } } },
      { transform: [{ filter: `datum.position === ${last}` }], mark: { type: "line", point: { size: 22, filled: true }, strokeWidth: 2.6 },
        encoding: { x, y, color, description: { field: "tip" } } },
    ],
  });
  const what = s.method === "exact"
    ? s.rows.length > 1 ? `Every singular value of each J_i (d = ${a.model?.nEmbd ?? "?"}), one line per input position; the last position in orange` : "Every singular value of J_last"
    : `The leading ${s.rows[0].values.length} singular values of J_last (matrix-free route: only converged values are drawn)`;
  return figure("spectra", "Singular-value spectra", `${what}. A steep drop means the position's Jacobian is close to low rank: a few directions carry its effect on the output.`,
    chart("spectra", svg));
}

function decodedTable(a: AnalysisSummary): string {
  const rows = a.positions;
  if (!rows || rows.length === 0) return "";
  const body = rows.map((r) => `<tr><td class="num">${r.position}</td><td><span class="chip">${esc(showToken(a.tokenTexts[r.position] ?? ""))}</span></td><td class="num">${fmt(r.sigma1)}</td><td>${chips(r.u, a.predictedTokenText)}</td><td>${chips(r.v, a.tokenTexts[r.position])}</td></tr>`).join("\n");
  const top = a.singular
    ? `<h3>Leading singular vectors of J_last</h3><table><thead><tr><th>j</th><th>σⱼ</th><th>uⱼ through the LM head</th><th>vⱼ nearest input embeddings</th></tr></thead><tbody>${a.singular.values.map((s, j) => `<tr><td class="num">${j + 1}</td><td class="num">${fmt(s)}</td><td>${chips(a.singular!.u[j], a.predictedTokenText)}</td><td>${chips(a.singular!.v[j])}</td></tr>`).join("")}</tbody></table>`
    : "";
  return figure("vectors", "Singular vectors decoded into tokens (the paper's Fig. 3 view)",
    `For each input position i, the leading singular triplet of J_i: the left vector u₁ read through the LM head (the tokens it promotes in the output) and the right vector v₁'s nearest input embeddings (the input direction J_i amplifies most). Highlighted: the predicted token (u) and the position's own token (v).${a.singularNote ? ` ${esc(a.singularNote)}.` : ""}`,
    `<table><thead><tr><th>i</th><th>token</th><th>σ₁</th><th>u₁ → LM head</th><th>v₁ → nearest embedding</th></tr></thead><tbody>${body}</tbody></table>${top}`);
}

async function emergence(a: AnalysisSummary): Promise<string> {
  const e = a.emergence;
  if (!e || e.length === 0) return "";
  const k = Math.max(...e.map((r) => (r.values ?? [r.value]).length));
  const values = e.flatMap((r) => (r.values ?? [r.value]).map((v, j) => ({ layer: `layer ${r.layer}`, order: r.layer, j: `σ${j + 1}`, value: v,
    tip: `layer ${r.layer}: σ${j + 1} = ${fmt(v)}` })));
  const svg = await chartSvg("emergence", {
    width: 56 * k, height: 30 * e.length, data: { values },
    layer: [
      { mark: { type: "rect", stroke: "white", strokeWidth: 1 },
        encoding: {
          x: { field: "j", type: "ordinal", title: null, axis: { orient: "top", labelAngle: 0 } },
          y: { field: "layer", type: "ordinal", sort: { field: "order" }, title: null },
          color: { field: "value", type: "quantitative", scale: { scheme: "blues" }, title: "σ" },
          description: { field: "tip" },
        } },
      { mark: { type: "text", fontSize: 11 },
        encoding: {
          x: { field: "j", type: "ordinal" }, y: { field: "layer", type: "ordinal", sort: { field: "order" } },
          text: { field: "value", type: "quantitative", format: ".2f" },
          color: { condition: { test: `datum.value > ${0.6 * Math.max(...values.map((v) => v.value))}`, value: "white" }, value: "#222" },
        } },
    ],
  });
  const table = `<table><thead><tr><th>layer</th><th>σ₁</th><th>u₁ through the final norm and LM head</th></tr></thead><tbody>${e.map((r) => `<tr><td class="num">${r.layer}</td><td class="num">${fmt(r.value)}</td><td>${chips(r.tokens, a.predictedTokenText)}</td></tr>`).join("")}</tbody></table>`;
  return figure("emergence", "Layer emergence",
    "Per layer, the last token's Jacobian of the residual stream after that layer (through the detached final norm): its leading left singular vector decoded through the LM head, and its leading singular values (heat map). Watch the prediction appear with depth.",
    `<div class="row">${table}${chart("emergence", svg)}</div>`);
}

async function jacobianHeatmap(a: AnalysisSummary): Promise<string> {
  const J = a.jacobianLast;
  if (!J) return "";
  const d = J.d;
  const m = Math.max(1e-12, ...J.data.map(Math.abs));
  const values = J.data.map((v, idx) => ({ k: Math.floor(idx / d), c: idx % d, v,
    tip: `∂y${Math.floor(idx / d)}/∂x${idx % d} = ${v.toPrecision(3)}` }));
  const cell = Math.max(3, Math.min(8, Math.floor(512 / d)));
  const svg = await chartSvg("jacobian", {
    width: cell * d, height: cell * d, data: { values },
    mark: { type: "rect" },
    encoding: {
      x: { field: "c", type: "ordinal", title: "input component c (of x_last)", axis: { values: Array.from({ length: Math.ceil(d / 16) }, (_, i) => i * 16), labelAngle: 0 } },
      y: { field: "k", type: "ordinal", title: "output component k (of y)", axis: { values: Array.from({ length: Math.ceil(d / 16) }, (_, i) => i * 16) } },
      color: { field: "v", type: "quantitative", scale: { scheme: DIVERGING, domain: [-m, m] }, title: "∂y_k/∂x_c" },
      description: { field: "tip" },
    },
  });
  return figure("jlast", "The detached Jacobian of the last token",
    `J_last = ∂y/∂x_last, ${d} × ${d}: how each component of the last input embedding moves each component of the output (blue positive, red negative; symmetric scale ±${fmt(m)}).`,
    chart("jacobian", svg));
}

const STYLE = `
:root { color-scheme: light; --ink: #1d2430; --muted: #5f6b7a; --line: #e3e7ee; --accent: #2f6fb5; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f7fa; color: var(--ink); font: 15px/1.55 ${FONT}; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 24px 48px; }
header { margin-bottom: 20px; }
.kicker { margin: 0; color: var(--accent); font-size: 12px; letter-spacing: .08em; text-transform: uppercase; font-weight: 600; }
h1 { margin: 6px 0 8px; font-size: 26px; line-height: 1.3; font-weight: 650; }
h1 .pred { color: var(--accent); font-family: ui-monospace, Menlo, Consolas, monospace; background: #e6eef8; padding: 0 6px; border-radius: 4px; }
h2 { margin: 0 0 4px; font-size: 18px; font-weight: 620; }
h3 { margin: 22px 0 6px; font-size: 15px; font-weight: 600; }
.meta { margin: 0 0 10px; color: var(--muted); font-size: 13px; }
.lede { margin: 0; max-width: 860px; }
.card { background: white; border: 1px solid var(--line); border-radius: 10px; padding: 20px 22px; margin: 16px 0; }
.explain { margin: 0 0 14px; color: var(--muted); max-width: 860px; font-size: 14px; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px; margin: 18px 0; }
.stat { background: white; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.stat .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.stat .v { font-size: 22px; font-weight: 650; margin: 2px 0; }
.stat .n { color: var(--muted); font-size: 12.5px; }
.mono, .chip, .tok { font-family: ui-monospace, Menlo, Consolas, monospace; }
figure.chart { margin: 0; overflow-x: auto; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.errs { flex: 1 1 260px; display: flex; flex-direction: column; gap: 10px; padding-top: 12px; font-size: 14px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 6px; }
.muted { color: var(--muted); }
.strip { font-size: 18px; line-height: 2.1; margin: 4px 0 8px; }
.tok { white-space: pre; padding: 3px 1px; border-radius: 3px; border: 1px solid rgba(0,0,0,.06); cursor: default; }
.tok.dark { color: white; }
.scale { display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 12px; margin-bottom: 12px; }
.scale .bar { width: 180px; height: 10px; border-radius: 5px; }
table { border-collapse: collapse; font-size: 13.5px; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; border-bottom: 1px solid var(--line); padding: 6px 10px 6px 0; }
td { border-bottom: 1px solid #f0f2f6; padding: 5px 10px 5px 0; vertical-align: middle; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
.chip { display: inline-block; white-space: pre; background: #f1f3f7; border-radius: 4px; padding: 0 5px; margin: 1px 3px 1px 0; font-size: 12.5px; }
.chip.hit { background: #dbe8f7; color: #17467a; font-weight: 600; }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
`;

/** The report as one HTML document. Deterministic: the same summary gives the same bytes. */
export async function renderHtmlReport(a: AnalysisSummary): Promise<string> {
  const sections = [
    await predictions(a),
    await contributions(a),
    await reconstruction(a),
    await spectra(a),
    decodedTable(a),
    await emergence(a),
    await jacobianHeatmap(a),
  ].filter((s) => s !== "");
  return htmlPage(`llj-gguf: ${esc(JSON.stringify(a.prompt))} → ${esc(showToken(a.predictedTokenText))}`, `${header(a)}
${stats(a)}
${sections.join("\n")}
<footer>Made by llj-gguf from the analysis summary (<code>analyze --json</code>); <code>npx llj-gguf report summary.json -o report.html</code> redraws it. Self-contained: no script, no network request.${a.emergence ? "" : " Run analyze with <code>--layers</code> to add the layer-emergence table."}</footer>`);
}

/**
 * The shell of every report page: the shared style and a Content-Security-Policy that
 * forbids scripts and every network request. `title` is escaped HTML; `content` goes in <main>;
 * `style` is added after the shared style.
 */
export function htmlPage(title: string, content: string, style = ""): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>${title}</title>
<style>${STYLE}${style}</style>
</head>
<body>
<main>
${content}
</main>
</body>
</html>
`;
}
