// The HTML report as a person sees it: drawn for a stories260K analysis, redrawn byte for
// byte from the saved --json summary, and rendered in a real headless Chromium with every
// request intercepted. Chromium is Debian's (`apt-get install -y chromium`); without it this
// suite fails, unless LLJ_SKIP_BROWSER_TESTS=1 says to skip the browser test on purpose.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { packageRoot } from "../src/native.js";
import { loadModel } from "../src/index.js";
import { renderHtmlReport } from "../src/html-report.js";
import type { AnalysisSummary } from "../src/analyses/summary.js";
import { PROMPT, STORIES } from "./helpers.js";

const cli = path.join(packageRoot, "dist", "src", "cli.js");
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
const CHROMIUM = process.env.LLJ_CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];
const skipBrowser = process.env.LLJ_SKIP_BROWSER_TESTS === "1";

const dir = mkdtempSync(path.join(os.tmpdir(), "llj-report-"));
const jsonFile = path.join(dir, "summary.json"), direct = path.join(dir, "direct.html"), redrawn = path.join(dir, "redrawn.html");
let summary: AnalysisSummary;
let html: string;

beforeAll(() => {
  const r = run("analyze", STORIES, PROMPT, "--layers", "--json", jsonFile, "--report", direct, "--gpu", "false");
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(r.stdout).toContain(`report        ${direct}`);
  summary = JSON.parse(readFileSync(jsonFile, "utf8")) as AnalysisSummary;
  html = readFileSync(direct, "utf8");
});

test("the summary carries what the report draws", () => {
  const d = 64, n = 10;
  expect(summary.predictedTokenText).toBe(" g");
  expect(summary.topPredictions![0]).toMatchObject({ id: 298, text: " g" });
  const p = summary.topPredictions!.map((t) => t.probability);
  expect(p).toHaveLength(10);
  expect(p[0]).toBeGreaterThan(p[1]);
  expect(p.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(1 + 1e-9);
  expect(summary.reconstruction!.output).toHaveLength(d);
  expect(summary.reconstruction!.detached).toHaveLength(d);
  expect(summary.reconstruction!.nonDetached).toHaveLength(d);
  // every position's full spectrum (exact route, d = 64), its σ1 the decoded triplet's
  expect(summary.spectra!.method).toBe("exact");
  expect(summary.spectra!.rows.map((r) => r.position)).toEqual([...Array(n).keys()]);
  for (const r of summary.spectra!.rows) expect(r.values).toHaveLength(d);
  expect(summary.positions!.map((r) => r.sigma1)).toEqual(summary.spectra!.rows.map((r) => r.values[0]));
  expect(summary.positions![n - 1].u[0]).toBe(" g");
  expect(summary.positions![n - 1].v[0]).toBe(" little");
  expect(summary.positions![n - 1].sigma1).toBeCloseTo(summary.singular!.values[0], 5);
  expect(summary.jacobianLast!.d).toBe(d);
  expect(summary.jacobianLast!.data).toHaveLength(d * d);
  for (const r of summary.emergence!) {
    expect(r.values).toHaveLength(4);
    expect(r.values![0]).toBe(r.value);
  }
  expect(summary.emergence![4].tokens[0]).toBe(" g");
});

test("the report's numbers are the analysis': J_last and the reconstruction against the API", async () => {
  const model = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    const lin = await model.linearize(PROMPT);
    const n = lin.nTokens, d = lin.nEmbd;
    const J = (await lin.jacobian({ firstPosition: n - 1 })).block(n - 1);
    let num = 0, den = 0;
    for (let i = 0; i < d * d; i++) {
      num += (summary.jacobianLast!.data[i] - J[i]) ** 2;
      den += J[i] ** 2;
    }
    expect(Math.sqrt(num / den)).toBeLessThan(1e-6);
    const a = await lin.attribution();
    summary.logitContributions.forEach((c, i) => expect(c).toBeCloseTo(a.contributions[i], 5));
    // the detached points reconstruct y; the ordinary ones do not
    const r = summary.reconstruction!;
    const err = (x: number[]) => Math.sqrt(x.reduce((s, v, k) => s + (v - r.output[k]) ** 2, 0) / r.output.reduce((s, v) => s + v * v, 0));
    expect(err(r.detached)).toBeLessThan(1e-5);
    expect(err(r.nonDetached)).toBeGreaterThan(0.1);
    expect(err(r.detached)).toBeCloseTo(summary.detached.relativeError, 6);
  } finally {
    await model.dispose();
  }
});

test("`report summary.json` redraws the very same file, and rendering is deterministic in one process", async () => {
  const r = run("report", jsonFile, "-o", redrawn);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(readFileSync(redrawn, "utf8")).toBe(html);
  // ids are per chart, not a process-wide counter: twice in this process gives the same bytes as the CLI's
  const { arrays: _, ...s } = JSON.parse(readFileSync(jsonFile, "utf8")) as AnalysisSummary & { arrays?: unknown };
  expect(await renderHtmlReport(s)).toBe(html);
  expect(await renderHtmlReport(s)).toBe(html);
});

test("`report` refuses a file that is not a summary, in one line", () => {
  const r = run("report", path.join(packageRoot, "package.json"), "-o", path.join(dir, "x.html"));
  expect(r.status).toBe(1);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(/is not an analysis summary/);
});

test("the report is self-contained: no script, no external reference", () => {
  expect(html).not.toMatch(/<script/i);
  expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?(https?:|\/\/)/i);
  expect(html).not.toMatch(/@import|url\(\s*["']?https?:/i);
  expect(html).toContain("Content-Security-Policy");
});

(skipBrowser ? test.skip : test)("headless Chromium renders every chart, with no console error and no network request", async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set LLJ_CHROMIUM; LLJ_SKIP_BROWSER_TESTS=1 skips this test)`);
  }
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const requests: string[] = [], errors: string[] = [];
    page.on("request", (req) => requests.push(req.url()));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    // Opened as a file, as a person would: that navigation is the only request allowed.
    const fileUrl = `file://${direct}`;
    await page.route("**/*", (route) => {
      if (route.request().url() === fileUrl) return route.continue();
      requests.push(`intercepted ${route.request().url()}`);
      return route.abort();
    });
    await page.goto(fileUrl, { waitUntil: "load" });
    expect(requests.filter((u) => u !== fileUrl)).toEqual([]);
    expect(errors).toEqual([]);

    const charts = await page.$$eval("figure.chart", (figs) => figs.map((f) => {
      const svg = f.querySelector("svg");
      const box = svg?.getBoundingClientRect();
      const count = (sel: string) => f.querySelectorAll(sel).length;
      return {
        key: f.getAttribute("data-chart"), width: box?.width ?? 0, height: box?.height ?? 0,
        marks: count("g.role-mark > *"), symbols: count("g.mark-symbol.role-mark > path"), rects: count("g.mark-rect.role-mark > path"),
        lines: count("g.mark-line.role-mark > path"),
        detached: [...f.querySelectorAll("g.mark-symbol.role-mark > path > title")].filter((t) => /detached/.test(t.textContent ?? "")).length,
        ordinary: [...f.querySelectorAll("g.mark-symbol.role-mark > path > title")].filter((t) => /ordinary/.test(t.textContent ?? "")).length,
      };
    }));
    expect(charts.map((c) => c.key)).toEqual(["predictions", "contributions", "reconstruction", "spectra", "emergence", "jacobian"]);
    for (const c of charts) {
      expect(c.marks).toBeGreaterThan(0);
      expect(c.width).toBeGreaterThan(100);
      expect(c.height).toBeGreaterThan(50);
    }
    const byKey = Object.fromEntries(charts.map((c) => [c.key, c]));
    const d = 64, n = 10;
    expect(byKey.reconstruction.symbols).toBe(2 * d);  // one point per output component, per Jacobian
    expect(byKey.reconstruction.detached).toBe(d);
    expect(byKey.reconstruction.ordinary).toBe(d);
    expect(byKey.jacobian.rects).toBe(d * d);
    expect(byKey.spectra.lines).toBe(n);               // one spectrum per input position
    expect(byKey.emergence.rects).toBe(5 * 4);         // layers × leading singular values
    expect(await page.$$eval("[data-chart=predictions] g.mark-rect.role-mark > path", (p) => p.length)).toBe(10);
    expect(await page.$$eval("[data-chart=contributions] g.mark-rect.role-mark > path", (p) => p.length)).toBe(n);

    // the prompt's tokens, coloured by their exact contribution, with the value on hover
    const tokens = await page.$$eval(".tok", (els) => els.map((e) => ({ text: e.textContent, value: Number(e.getAttribute("data-value")), title: e.getAttribute("title"), bg: (globalThis as unknown as { getComputedStyle(e: unknown): { backgroundColor: string } }).getComputedStyle(e).backgroundColor })));
    expect(tokens.map((t) => t.text)).toEqual(summary.tokenTexts);
    expect(tokens.map((t) => t.value)).toEqual(summary.logitContributions);
    expect(tokens[n - 1].title).toContain(`+${summary.logitContributions[n - 1].toFixed(3)}`);
    expect(new Set(tokens.map((t) => t.bg)).size).toBeGreaterThan(3);
    expect(await page.textContent("h1 .pred")).toBe("␣g");

    const shot = path.join(process.env.LLJ_REPORT_SCREENSHOT_DIR ?? dir, "report.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect(readFileSync(shot).subarray(1, 4).toString()).toBe("PNG");
  } finally {
    await browser.close();
  }
});
