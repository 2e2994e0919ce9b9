// Lifetimes: every native call of a Model or Linearization is tracked, dispose() waits for
// running work (or aborts it when asked), and work issued after dispose is refused with
// DISPOSED. Each scenario runs in a child process: a use-after-free shows as a signal there.
import { runChild, CRASH_SIGNATURE, type ChildResult } from "./child.js";


function expectClean(r: ChildResult): void {
  expect({ signal: r.signal, timedOut: r.timedOut, crash: CRASH_SIGNATURE.test(r.stderr) ? r.stderr : null }).toEqual({ signal: null, timedOut: false, crash: null });
  expect({ status: r.status, stderr: r.status === 0 ? "" : r.stderr.slice(-2000) }).toEqual({ status: 0, stderr: "" });
}

test("attribution() not awaited, then model.dispose(): dispose waits for it (5 runs, no crash)", async () => {
  const r = await runChild(`
    for (let run = 0; run < 5; run++) {
      const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
      const lin = await model.linearize("Once upon a time, there was a little");
      const pending = lin.attribution({ token: lin.predictedToken });
      const decoding = lin.decode(lin.output, { space: "output", top: 3 });
      await model.dispose();
      const a = await pending, d = await decoding;
      report({ run, logit: a.logit, sum: a.contributions.reduce((x, y) => x + y, 0) + a.biasContribution + a.outputBias,
        top: d[0][0].id, predicted: lin.predictedToken, disposed: lin.disposed && model.disposed });
    }`);
  expectClean(r);
  expect(r.reports).toHaveLength(5);
  for (const x of r.reports) {
    expect(Number.isFinite(x.logit)).toBe(true);
    expect(Math.abs((x.logit as number) - (x.sum as number))).toBeLessThan(1e-3 * Math.max(1, Math.abs(x.logit as number)));
    expect(x.top).toBe(x.predicted);
    expect(x.disposed).toBe(true);
  }
});

test("every kind of call in flight during dispose() settles, and the process survives", async () => {
  const r = await runChild(`
    const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
    const lin = await model.linearize("Once upon a time, there was a little");
    const d = lin.nEmbd, n = lin.nTokens;
    const calls = {
      jvp: lin.jvp(new Float32Array(n * d).fill(0.01)),
      vjp: lin.vjp(new Float32Array(d).fill(0.01)),
      jacobian: lin.jacobian(),
      svd: lin.svd({ k: 2 }),
      reconstruction: lin.reconstruction(),
      nonlinear: lin.nonlinearReconstruction(),
      emergence: lin.emergence({ layers: [0, 4] }),
      layerSvd: lin.layerSvd({ layer: 2, tap: "mlp" }, { k: 1 }),
      linearize: model.linearize("One day"),
      referenceForward: model.referenceForward("One day"),
    };
    const settled = Object.entries(calls).map(([name, p]) => outcome(name, p));
    const disposing = model.dispose();
    await Promise.all(settled);
    await disposing;
    await outcome("jvp after dispose", lin.jvp(new Float32Array(n * d)));
    await outcome("linearize after dispose", model.linearize("x"));
    await outcome("referenceForward after dispose", model.referenceForward("x"));
    await outcome("tokenize after dispose", () => model.tokenize("x"));
    await outcome("svd after dispose", lin.svd());
    await outcome("second dispose", model.dispose());`);
  expectClean(r);
  const by = Object.fromEntries(r.reports.map((x) => [x.name, x]));
  // running work finished normally: dispose waited for it
  for (const name of ["jvp", "vjp", "jacobian", "svd", "reconstruction", "nonlinear", "emergence", "layerSvd", "referenceForward"]) {
    expect(by[name]).toMatchObject({ outcome: "resolved", nonFinite: false });
  }
  // a linearization that finished while its model was being disposed is freed and refused by name
  expect(by.linearize).toMatchObject({ outcome: "rejected", lljError: true, code: "DISPOSED" });
  for (const name of ["jvp after dispose", "linearize after dispose", "referenceForward after dispose", "tokenize after dispose", "svd after dispose"]) {
    expect(by[name]).toMatchObject({ outcome: "rejected", lljError: true, code: "DISPOSED" });
    expect(by[name].message).toMatch(/has been disposed/);
  }
  expect(by["second dispose"]).toMatchObject({ outcome: "resolved" });
});

test("dispose({ abort: true }) stops running work with ABORTED, quickly", async () => {
  const r = await runChild(`
    const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
    const lin = await model.linearize(Array.from({ length: 200 }, (_, i) => 1 + (i % 400)), { batchMemoryBytes: 1 });
    const jac = outcome("jacobian", lin.jacobian());
    const svd = outcome("svd", lin.svd({ token: "all", method: "randomized", k: 4, maxIterations: 50, tolerance: 1e-12 }));
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await model.dispose({ abort: true });
    const ms = Date.now() - t0;
    await jac;
    await svd;
    report({ name: "time", ms });`);
  expectClean(r);
  const by = Object.fromEntries(r.reports.map((x) => [x.name, x]));
  expect(by.jacobian).toMatchObject({ outcome: "rejected", lljError: true, code: "ABORTED" });
  expect(by.svd).toMatchObject({ outcome: "rejected", lljError: true, code: "ABORTED" });
  expect(by.time.ms as number).toBeLessThan(1000);
});

test("concurrent linearizations of one model equal sequential ones bit for bit", async () => {
  const r = await runChild(`
    const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
    const prompts = ["Once upon a time", "One day, a little girl", "The cat sat", "Lily and Tom"];
    const seq = [];
    for (const p of prompts) { const l = await model.linearize(p); seq.push(Array.from((await l.reconstruction()).reconstructed)); }
    const par = await Promise.all(prompts.map(async (p) => { const l = await model.linearize(p); return Array.from((await l.reconstruction()).reconstructed); }));
    report({ same: seq.every((s, i) => s.every((x, k) => Object.is(x, par[i][k]))) });
    await model.dispose();`);
  expectClean(r);
  expect(r.reports[0]).toEqual({ same: true });
});

test("Ctrl-C (SIGINT) stops `analyze` within a second: one line, exit 130", async () => {
  const { spawn } = await import("node:child_process");
  const path = await import("node:path");
  const { packageRoot } = await import("../src/native.js");
  const { STORIES } = await import("./helpers.js");
  // ~1300 tokens with --layers: over a minute of work uninterrupted
  const prompt = Array(60).fill("Once upon a time, there was a little girl named Lily who loved to play in the park with her dog.").join(" ");
  const child = spawn(process.execPath, [path.join(packageRoot, "dist", "src", "cli.js"), "analyze", STORIES, prompt, "--gpu", "false", "--layers"],
    { env: { ...process.env, NODE_OPTIONS: "" }, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (b) => (stderr += b));
  const done = new Promise<{ status: number | null; signal: string | null }>((r) => child.on("close", (status, signal) => r({ status, signal })));
  await new Promise((r) => setTimeout(r, 3000));
  const t0 = Date.now();
  child.kill("SIGINT");
  const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  const r = await done;
  clearTimeout(killer);
  expect({ ...r, stderr: stderr.trim() }).toEqual({ status: 130, signal: null, stderr: "llj-gguf: interrupted (Ctrl-C)" });
  expect(Date.now() - t0).toBeLessThan(1000);
});

test("an AbortSignal stops svd() and jacobian() within a second", async () => {
  const r = await runChild(`
    const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
    const lin = await model.linearize(Array.from({ length: 200 }, (_, i) => 1 + (i % 400)), { batchMemoryBytes: 1 });
    for (const [name, start] of [
      ["svd", (signal) => lin.svd({ token: "all", method: "randomized", k: 4, maxIterations: 50, tolerance: 1e-12, signal })],
      ["jacobian", (signal) => lin.jacobian({ signal })]]) {
      const ac = new AbortController();
      const p = outcome(name, start(ac.signal));
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      ac.abort();
      await p;
      report({ name: name + " ms", ms: Date.now() - t0 });
    }
    await outcome("the linearization still works", lin.vjp(new Float32Array(64).fill(1)));
    await model.dispose();`);
  expectClean(r);
  const by = Object.fromEntries(r.reports.map((x) => [x.name, x]));
  for (const name of ["svd", "jacobian"]) {
    expect(by[name]).toMatchObject({ outcome: "rejected", lljError: true, code: "ABORTED" });
    expect(by[name + " ms"].ms as number).toBeLessThan(1000);
  }
  expect(by["the linearization still works"]).toMatchObject({ outcome: "resolved", nonFinite: false });
});

test("200 load → linearize → svd → attribution → dispose cycles keep memory flat", async () => {
  const r = await runChild(`
    const samples = [];
    for (let i = 1; i <= 200; i++) {
      const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
      const lin = await model.linearize("Once upon a time, there was a little girl");
      await lin.svd({ k: 2 });
      await lin.attribution();
      await model.dispose();
      if (i % 25 === 0) { globalThis.gc(); const m = process.memoryUsage(); samples.push({ i, rss: m.rss, heap: m.heapUsed }); }
    }
    report({ samples });`, { timeoutMs: 150_000, nodeArgs: ["--expose-gc"] });
  expectClean(r);
  const samples = r.reports[0].samples as Array<{ i: number; rss: number; heap: number }>;
  // RSS wanders by ±30 MiB with malloc's arenas (measured: 123, 160, 147, 138, 162 MiB at
  // 50…300 cycles), so compare the lowest of the last samples with cycle 50: a model leaked
  // per cycle (1 MiB of weights plus llama.cpp's buffers) would add 150+ MiB.
  const at50 = samples.find((s) => s.i === 50)!;
  const late = Math.min(...samples.filter((s) => s.i >= 150).map((s) => s.rss));
  expect((late - at50.rss) / 2 ** 20).toBeLessThan(48);
  expect((samples[samples.length - 1].heap - at50.heap) / 2 ** 20).toBeLessThan(4);
}, 180_000);
