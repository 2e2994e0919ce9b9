// The memory plan (src/planner.ts): the batch it leaves is the one the engine runs, a budget
// the fixed parts exceed is refused before anything is allocated, a budget without room for
// the full Jacobian sends "auto" analyses matrix-free with the same results, and the peak RSS
// of a whole analysis stays within the plan (measured in a fresh process).
import { loadModel, syntheticModel, TINY_LLAMA, LljError, type Model } from "../src/index.js";
import { runChild } from "./child.js";
import { relErr } from "./helpers.js";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { packageRoot } from "../src/native.js";
import { STORIES } from "./helpers.js";

const SPEC = { ...TINY_LLAMA, seed: 31, nEmbd: 512, nLayer: 4, nHead: 8, nHeadKv: 4, nFf: 1536, contextLength: 512 };
const tokens = (n: number) => Array.from({ length: n }, (_, i) => (i * 37 + 11) % 200 + 3);
const MiB = 2 ** 20;
const SMALL = { ...SPEC, seed: 32, nLayer: 2 };

let model: Model;
beforeAll(async () => { model = await loadModel({ modelPath: await syntheticModel(SPEC, "Q8_0"), gpu: false }); });
afterAll(async () => { await model.dispose(); });

test("the plan's batch is the engine's, chunking leaves the results unchanged, and a budget without room for the Jacobian goes matrix-free", async () => {
  const t = tokens(12);
  await using small = await loadModel({ modelPath: await syntheticModel(SMALL, "Q8_0"), gpu: false });
  const model = small, d = SMALL.nEmbd;
  const roomy = model.plan(t, { memoryBudget: 2 ** 30 });
  expect(roomy.route).toBe("full Jacobian");
  expect(roomy.batch).toBe(d);
  const fixed = roomy.fixed.reduce((a, p) => a + p.bytes, 0);
  // room for the fixed parts, the Krylov bases and five columns: B = 5, matrix-free
  const krylov = 2 * 4 * 12 * 16 * 18 * d;
  const tight = model.plan(t, { memoryBudget: fixed + krylov + 5 * roomy.columnBytes + 100 });
  expect([tight.batch, tight.route]).toEqual([5, "matrix-free"]);
  expect(tight.reasons.join(" ")).toMatch(/does not fit beside the fixed parts/);
  const a = await model.linearize(t, { memoryBudget: tight.budget });
  const b = await model.linearize(t);
  try {
    expect(a.maxBatch).toBe(5);
    expect(a.plan?.batch).toBe(5);
    // the same products in chunks of 5
    const u = Float32Array.from({ length: 7 * d }, (_, i) => Math.sin(i));
    expect(relErr(await a.vjp(u), await b.vjp(u))).toBeLessThan(1e-6);
    // "auto" SVD of every position: matrix-free under the tight plan, exact without one, the same values
    const sa = await a.svd({ token: "each", k: 2 }), sb = await b.svd({ token: "each", k: 2 });
    expect([sa.method, sb.method]).toEqual(["randomized", "exact"]);
    for (let i = 0; i < 12; i++) expect(relErr(sa.positions[i].values, sb.positions[i].values)).toBeLessThan(1e-4);
    // the ordinary contrast runs in the room the plan kept for it
    const c = await a.nonlinearReconstruction();
    expect(relErr([c.relativeError], [(await b.nonlinearReconstruction()).relativeError])).toBeLessThan(1e-5);
  } finally {
    await a.dispose();
    await b.dispose();
  }
});

test("a budget the fixed parts exceed is refused with the numbers, before anything is allocated", async () => {
  const t = tokens(400);  // 4 layers × 400² × 8 heads of probabilities alone: 20 MiB
  const expectRefusal = (f: () => unknown) => {
    try {
      f();
      throw new Error("not refused");
    } catch (e) {
      expect(e).toBeInstanceOf(LljError);
      expect((e as LljError).code).toBe("OUT_OF_MEMORY");
      expect((e as LljError).message).toMatch(/does not fit the memory budget: 16\.0 MiB \(memoryBudget\) against [\d.]+ MiB of fixed parts \(frozen coefficients [\d.]+ MiB, /);
    }
  };
  expectRefusal(() => model.plan(t, { memoryBudget: 16 * MiB }));
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  await expect(model.linearize(t, { memoryBudget: 16 * MiB })).rejects.toThrow(/does not fit the memory budget/);
  expect(performance.now() - t0).toBeLessThan(100);  // the primal pass of 400 tokens alone takes longer
  expect(process.memoryUsage().rss - rss0).toBeLessThan(8 * MiB);
  await expect(model.linearize(t, { memoryBudget: 16 * MiB, batchMemoryBytes: MiB })).rejects.toThrow(/not both/);
});

test("analyze --plan prints the plan and exits; --memory-budget too small is one line naming the parts", () => {
  const cli = path.join(packageRoot, "dist", "src", "cli.js");
  const run = (...a: string[]) => spawnSync(process.execPath, [cli, ...a, "--gpu", "false"], { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
  const p = run("analyze", STORIES, "Once upon a time, there was a little", "--plan", "--memory-budget", "40M");
  expect(p.status).toBe(0);
  expect(p.stdout).toMatch(/^memory budget +40\.0 MiB \(memoryBudget\)$/m);
  expect(p.stdout).toMatch(/^ +batch \(B = \d+\) /m);
  expect(p.stdout).toMatch(/^route +(full Jacobian|matrix-free)$/m);
  expect(p.stdout).not.toMatch(/predicted/);  // it exits before the analysis
  const r = run("analyze", STORIES, "Once upon a time, there was a little", "--memory-budget", "400K");
  expect(r.status).toBe(1);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(/does not fit the memory budget: 400\.0 KiB .*--plan shows every part/);
  const bad = run("analyze", STORIES, "x", "--memory-budget", "lots");
  expect(bad.stderr).toMatch(/"lots" is not a size/);
});

test("the peak RSS of a whole analysis stays within the plan (a fresh process; the mapped file counted beside it)", async () => {
  const file = await syntheticModel(SPEC, "Q8_0");
  // roomy: the full Jacobian route; tight: room for the fixed parts, the Krylov bases and 16 columns only
  for (const [n, kind] of [[64, "roomy"], [24, "tight"]] as const) {
    const r = await runChild(`
      const m = await lib.loadModel({ modelPath: ${JSON.stringify(file)}, gpu: false });
      const t = Array.from({ length: ${n} }, (_, i) => (i * 37 + 11) % 200 + 3);
      const big = m.plan(t, { memoryBudget: 2 ** 40 });
      const budget = ${kind === "roomy" ? 400 * MiB : "big.fixed.reduce((a, p) => a + p.bytes, 0) + 2 * 4 * t.length * 16 * 18 * 512 + 16 * big.columnBytes"};
      const plan = m.plan(t, { memoryBudget: budget });
      // the peak of this process's own memory: getrusage's maxRSS would carry over the jest
      // worker's peak, which Linux keeps across the fork and exec that start this child
      const { readFileSync } = await import("node:fs");
      const peakRss = () => {
        const m = /VmHWM:\\s+(\\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
        return m ? Number(m[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
      };
      const r0 = peakRss();
      const lin = await m.linearize(t, { memoryBudget: budget, threads: 2 });
      const s = await lin.svd({ token: "each", k: 2 });
      await lin.svd({ k: 3 });
      await lin.reconstruction();
      await lin.nonlinearReconstruction();
      report({ route: plan.route, method: s.method, budget, peak: plan.peakBytes, mapped: plan.mappedBytes, delta: peakRss() - r0 });
      await lin.dispose(); await m.dispose();`, { timeoutMs: 200_000 });
    expect(r.stderr).toBe("");
    const o = r.reports[0] as { route: string; method: string; budget: number; peak: number; mapped: number; delta: number };
    console.log(`n = ${n}, budget ${(o.budget / MiB).toFixed(0)} MiB: ${o.route} (${o.method}), RSS grew ${(o.delta / MiB).toFixed(0)} MiB; plan ${(o.peak / MiB).toFixed(0)} MiB + ${(o.mapped / MiB).toFixed(0)} MiB mapped`);
    expect(o.route).toBe(kind === "roomy" ? "full Jacobian" : "matrix-free");
    expect(o.method).toBe(kind === "roomy" ? "exact" : "randomized");
    expect(o.peak).toBeLessThanOrEqual(o.budget);
    expect(o.delta).toBeLessThanOrEqual(o.peak + o.mapped);
    expect(o.delta).toBeGreaterThan(0.3 * o.peak);  // and the plan is not a blanket overestimate
  }
}, 400_000);
