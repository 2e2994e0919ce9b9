// The lens readout page (`lens show --report`) as a person sees it: a lens fitted on
// stories260K, the page written by the CLI, then opened in headless Chromium with every
// request but the file's refused. The grid is checked cell by cell against Lens.readout (the
// library's answer), where each token's text is drawn (inside its own cell), the colours
// against the probabilities, and the header against the lens file. Chromium is Debian's
// (`apt-get install -y chromium`); LLJ_SKIP_BROWSER_TESTS=1 skips the browser test on purpose.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { packageRoot } from "../src/native.js";
import { loadModel, fitLens, Lens, lensReport, type LensReportCell, type LensReportData, type LensToken } from "../src/index.js";
import { showToken } from "../src/html-report.js";
import { STORIES } from "./helpers.js";

const cli = path.join(packageRoot, "dist", "src", "cli.js");
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
const CHROMIUM = process.env.LLJ_CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const skipBrowser = process.env.LLJ_SKIP_BROWSER_TESTS === "1";

const CORPUS = [
  "Once upon a time, there was a little girl named Lily. She loved to play",
  "One day, a big dog came to the park and saw a red ball under the tree.",
];
const SHOW = "Once upon a time, there was a little girl named";
const SOURCE = [1, 2, 3], OUTPUT = 4;  // stories260K has 5 layers: the last reads through the identity

const dir = mkdtempSync(path.join(os.tmpdir(), "llj-lens-report-"));
const lensFile = path.join(dir, "lens.pt"), pageFile = path.join(dir, "lens.html");
let data: LensReportData;     // what the library reads, as the page's input
let html: string;
const cell = (layer: number, position: number): LensToken[] =>
  [...data.readout, ...data.baseline!].find((c) => c.layer === layer && c.position === position)!.tokens;

beforeAll(async () => {
  const model = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    const fitted = await fitLens({ model, corpus: CORPUS, sourceLayers: SOURCE, minPosition: 4, earlyStop: false });
    await fitted.save(lensFile);
    // the readout from the file, as the CLI reads it (f16 matrices)
    const lens = await Lens.load(lensFile);
    const lin = await model.linearize(SHOW);
    try {
      const cells: LensReportCell[] = [];
      for (const layer of [...SOURCE, OUTPUT]) {
        for (let position = 0; position < lin.nTokens; position++) cells.push({ layer, position, tokens: await lens.readout(lin, { layer, position, top: 5 }) });
      }
      data = {
        prompt: SHOW, tokenTexts: model.tokenPieces(lin.tokens ?? []),
        model: { path: model.path, description: model.description, architecture: model.architecture, nLayer: 5, nEmbd: 64, nVocab: model.hparams.nVocab },
        lens: { file: lensFile, estimator: lens.estimator, nPrompts: lens.nPrompts, sourceLayers: lens.sourceLayers, dModel: lens.dModel, metadata: lens.metadata },
        readout: cells.filter((c) => c.layer !== OUTPUT), baseline: cells.filter((c) => c.layer === OUTPUT),
      };
      expect(data.baseline![lin.nTokens - 1].tokens[0].id).toBe(lin.predictedToken);
    } finally {
      await lin.dispose();
    }
  } finally {
    await model.dispose();
  }
  const r = run("lens", "show", STORIES, SHOW, "--lens", lensFile, "--report", pageFile, "--gpu", "false");
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(r.stdout).toContain(`report        ${pageFile}`);
  html = readFileSync(pageFile, "utf8");
});

test("the readout's probabilities: a softmax, best first, the last layer the model's own", () => {
  expect(data.tokenTexts).toHaveLength(14);
  for (const c of [...data.readout, ...data.baseline!]) {
    const p = c.tokens.map((t) => t.probability);
    expect(p).toHaveLength(5);
    for (let i = 1; i < p.length; i++) expect(p[i]).toBeLessThanOrEqual(p[i - 1]);
    expect(p[0]).toBeGreaterThan(0);
    expect(p.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1 + 1e-6);
    // p_i / p_j = exp(score_i − score_j)
    expect(p[1] / p[0]).toBeCloseTo(Math.exp(c.tokens[1].score - c.tokens[0].score), 6);
  }
});

test("the CLI only wires the library: lensReport of the same readout is the same file, and is deterministic", async () => {
  expect(await lensReport(data)).toBe(html);
  expect(await lensReport(data)).toBe(html);
});

test("--json with --report: the JSON on stdout (the cells' probabilities included), the report line on stderr", () => {
  const other = path.join(dir, "again.html");
  const r = run("lens", "show", STORIES, SHOW, "--lens", lensFile, "--report", other, "--json", "--positions", "2", "--gpu", "false");
  expect(r.status).toBe(0);
  expect(r.stderr).toBe(`report        ${other}\n`);
  const j = JSON.parse(r.stdout) as { readout: LensReportCell[] };
  expect(j.readout.map((c) => [c.layer, c.position])).toEqual([[1, 12], [1, 13], [2, 12], [2, 13], [3, 12], [3, 13], [4, 12], [4, 13]]);
  for (const c of j.readout) {
    expect(c.tokens).toHaveLength(1);  // --top 1, though the page read 5
    expect(c.tokens[0].id).toBe(cell(c.layer, c.position)[0].id);
    expect(c.tokens[0].probability).toBeCloseTo(cell(c.layer, c.position)[0].probability, 6);
  }
  // --positions 2 draws the page's last two columns only
  expect(readFileSync(other, "utf8").match(/<title>layer \d+ · position/g)).toHaveLength(4 * 2);
});

test("the page is self-contained: no script, no external reference", () => {
  expect(html).not.toMatch(/<script/i);
  expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?(https?:|\/\/)/i);
  expect(html).not.toMatch(/@import|url\(\s*["']?https?:/i);
  expect(html).toContain("Content-Security-Policy");
});

test("lensReport refuses data it cannot draw", async () => {
  await expect(lensReport({ ...data, readout: [] })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  await expect(lensReport({ ...data, readout: [...data.readout, data.readout[0]] })).rejects.toThrow(/twice/);
  await expect(lensReport({ ...data, readout: [{ layer: 1, position: 14, tokens: data.readout[0].tokens }] })).rejects.toThrow(/position in \[0, 14\)/);
});

interface DrawnCell { layer: number; position: number; title: string; fill: string; stroke: string; x: number; y: number; w: number; h: number }

(skipBrowser ? test.skip : test)("headless Chromium: the grid is the library's readout, cell by cell, with no console error and no network request", async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set LLJ_CHROMIUM; LLJ_SKIP_BROWSER_TESTS=1 skips this test)`);
  }
  const n = data.tokenTexts.length;
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const requests: string[] = [], errors: string[] = [];
    page.on("request", (req) => requests.push(req.url()));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    const fileUrl = `file://${pageFile}`;
    await page.route("**/*", (route) => {
      if (route.request().url() === fileUrl) return route.continue();
      requests.push(`intercepted ${route.request().url()}`);
      return route.abort();
    });
    await page.goto(fileUrl, { waitUntil: "load" });
    expect(requests.filter((u) => u !== fileUrl)).toEqual([]);
    expect(errors).toEqual([]);

    // the cells: one rect per (layer, position), named by its hover title
    const rects = await page.$$eval("[data-chart=lens] g.mark-rect.role-mark > path", (paths) => paths.map((p) => {
      const b = p.getBoundingClientRect();
      return { title: p.querySelector("title")?.textContent ?? "", fill: p.getAttribute("fill") ?? "", stroke: p.getAttribute("stroke") ?? "",
        x: b.x, y: b.y, w: b.width, h: b.height };
    }));
    expect(rects).toHaveLength((SOURCE.length + 1) * n);
    const cells: DrawnCell[] = rects.map((r) => {
      const m = /^layer (\d+) · position (\d+) /.exec(r.title);
      expect(m).not.toBeNull();
      return { ...r, layer: Number(m![1]), position: Number(m![2]) };
    });
    const expected = [...SOURCE, OUTPUT].flatMap((l) => Array.from({ length: n }, (_, p) => `${l}/${p}`));
    expect(cells.map((c) => `${c.layer}/${c.position}`).sort()).toEqual([...expected].sort());

    // hover: the top 5 of the library's readout with their probabilities
    for (const c of cells) {
      const tokens = cell(c.layer, c.position);
      const list = tokens.map((t) => `${showToken(t.text)} ${(t.probability * 100).toFixed(t.probability < 1e-3 ? 3 : 1)}%`).join(" · ");
      expect(c.title).toContain(`${JSON.stringify(data.tokenTexts[c.position])}`);
      expect(c.title.endsWith(`: ${list}`)).toBe(true);
      expect(c.title.includes("the model's own output")).toBe(c.layer === OUTPUT);
    }

    // each cell's drawn text is its top-1 token, read where it is drawn (inside which rect)
    const texts = await page.$$eval("[data-chart=lens] g.mark-text.role-mark > text",
      (els) => els.map((e) => {
        const b = e.getBoundingClientRect();
        return { text: e.textContent ?? "", cx: b.x + b.width / 2, cy: b.y + b.height / 2 };
      }));
    expect(texts).toHaveLength(cells.length);
    const drawn = new Map<string, string>();
    for (const t of texts) {
      const inside = cells.filter((c) => t.cx > c.x && t.cx < c.x + c.w && t.cy > c.y && t.cy < c.y + c.h);
      expect(inside).toHaveLength(1);
      drawn.set(`${inside[0].layer}/${inside[0].position}`, t.text);
    }
    for (const c of cells) expect(drawn.get(`${c.layer}/${c.position}`)).toBe(showToken(cell(c.layer, c.position)[0].text));

    // the grid's geometry: rows are layers in order (the model's output last), columns positions in order
    const rowOf = new Map<number, number>(), colOf = new Map<number, number>();
    for (const c of cells) {
      expect(rowOf.get(c.layer) ?? c.y).toBeCloseTo(c.y, 3);
      expect(colOf.get(c.position) ?? c.x).toBeCloseTo(c.x, 3);
      rowOf.set(c.layer, c.y);
      colOf.set(c.position, c.x);
    }
    const rowsTopDown = [...rowOf.entries()].sort((a, b) => a[1] - b[1]).map(([l]) => l);
    expect(rowsTopDown).toEqual([...SOURCE, OUTPUT]);
    expect([...colOf.entries()].sort((a, b) => a[1] - b[1]).map(([p]) => p)).toEqual([...Array(n).keys()]);

    // the axes: the prompt's tokens as column headers, the layers as row labels
    const axes = await page.$$eval("[data-chart=lens] g.role-axis", (gs) => gs.map((g) => [...g.querySelectorAll("g.role-axis-label > text")].map((t) => t.textContent ?? "")));
    expect(axes).toContainEqual(data.tokenTexts.map((t, p) => `${p} ${showToken(t)}`));
    expect(axes).toContainEqual(["layer 1", "layer 2", "layer 3", "output (layer 4)"]);

    // colour by probability (Blues: darker is more likely), and outlines where the lens agrees with the model
    const luminance = (fill: string) => {
      const [r, g, b] = (/rgb\((\d+), (\d+), (\d+)\)/.exec(fill) ?? []).slice(1).map(Number);
      expect(Number.isFinite(r + g + b)).toBe(true);
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const p1 = (c: DrawnCell) => cell(c.layer, c.position)[0].probability;
    for (const a of cells) for (const b of cells) if (p1(a) > p1(b) + 0.05) expect(luminance(a.fill)).toBeLessThan(luminance(b.fill));
    const agrees = (c: DrawnCell) => c.layer !== OUTPUT && cell(c.layer, c.position)[0].id === cell(OUTPUT, c.position)[0].id;
    expect(cells.filter(agrees).length).toBeGreaterThan(0);
    expect(cells.filter((c) => !agrees(c)).length).toBeGreaterThan(0);
    for (const c of cells) expect(c.stroke).toBe(agrees(c) ? "#d9480f" : "white");
    const agreement = await page.$$eval("table.agree tr[data-layer]", (trs) => trs.map((tr) => [tr.getAttribute("data-layer"), tr.querySelectorAll("td")[1]?.textContent]));
    expect(agreement).toEqual(SOURCE.map((l) => [String(l), `${cells.filter((c) => c.layer === l && agrees(c)).length} of ${n} positions`]));

    // the header: model, lens metadata, prompt, and the model's prediction
    const meta = async (key: string) => (await page.textContent(`[data-meta=${key}] .v`))?.trim();
    expect(await meta("lens-file")).toBe("lens.pt");
    expect(await meta("estimator")).toBe("jlens");
    expect(await meta("n-prompts")).toBe("2");
    expect(await meta("source-layers")).toBe("1, 2, 3");
    expect(await meta("d-model")).toBe("64");
    const model = await page.textContent("[data-meta=model]");
    expect(model).toContain("stories260K.gguf");
    expect(model).toContain("llama · d = 64 · 5 layers · vocabulary 512 · 14 tokens");
    expect(await page.textContent("[data-meta=provenance]")).toContain("minPosition 4");
    expect(await page.textContent("h1")).toContain(JSON.stringify(SHOW));
    expect(await page.textContent("h1 .pred")).toBe(showToken(cell(OUTPUT, n - 1)[0].text));

    const shot = path.join(process.env.LLJ_REPORT_SCREENSHOT_DIR ?? dir, "lens-report.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect(readFileSync(shot).subarray(1, 4).toString()).toBe("PNG");
  } finally {
    await browser.close();
  }
});
