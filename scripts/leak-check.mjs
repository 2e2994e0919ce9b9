#!/usr/bin/env node
// LeakSanitizer over the addon (issue #15): runs load → linearize → every analysis →
// generate / steer / control vector → dispose cycles in a child Node with gcc's standalone
// liblsan preloaded (it intercepts malloc/free in every library; nothing is rebuilt), once
// with 1 cycle and once with CYCLES, and compares the bytes reported as leaked whose
// allocation stack passes through our addon, llama.cpp or ggml. Node and V8 free little at
// exit by design, so their own reports are counted apart and not judged.
// Exit 0: nothing of ours, llama.cpp's or ggml's grows with the cycles; 1: something does;
// it prints "leak-check SKIPPED" and exits 0 where no liblsan is installed.
// Usage: npm run build:ts && node scripts/leak-check.mjs [CYCLES=5]
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const cycles = Number(process.argv[2] ?? 5);
const stories = process.env.LLJ_TEST_STORIES ?? path.resolve(root, "..", "shared", "models", "stories260K.gguf");

function findLsan() {
  const r = spawnSync("gcc", ["-print-file-name=liblsan.so.0"], { encoding: "utf8" });
  const p = r.status === 0 ? r.stdout.trim() : "";
  if (p && path.isAbsolute(p) && existsSync(p)) return p;
  return ["/usr/lib/x86_64-linux-gnu/liblsan.so.0", "/usr/lib/aarch64-linux-gnu/liblsan.so.0"].find(existsSync);
}

const workload = (n, dir) => `
import { loadModel } from ${JSON.stringify(path.join(root, "dist", "src", "index.js"))};
for (let i = 0; i < ${n}; i++) {
  const model = await loadModel({ modelPath: ${JSON.stringify(stories)}, gpu: false });
  const lin = await model.linearize("Once upon a time, there was a little");
  await lin.svd({ k: 3 });
  await lin.svd({ token: "each", k: 1 });
  await lin.jacobian();
  await lin.vjp(new Float32Array(64).fill(0.1));
  await lin.reconstruction();
  await lin.attribution();
  await lin.emergence({ top: 3 });
  await lin.decode(new Float32Array(64).fill(0.1), { space: "input", top: 3 });
  await model.referenceForward("Once upon a time,");
  await model.generate("Once upon a time,", { maxTokens: 4 });
  const op = await model.steeringOperator({ concept: "Tom had a pet dog" });
  await model.generate("Once", { maxTokens: 3, steering: op });
  await op.exportControlVector(${JSON.stringify(path.join(dir, "cv.gguf"))});
  await model.generate("Once", { maxTokens: 3, controlVector: { path: ${JSON.stringify(path.join(dir, "cv.gguf"))} } });
  const aborted = new AbortController();
  const pending = lin.jacobian({ signal: aborted.signal }).catch(() => {});
  aborted.abort();
  await pending;
  await op.dispose();
  await lin.dispose();
  await model.dispose();
}
// let V8 collect the disposed JS objects and run their N-API finalizers (Node skips them at exit)
for (let k = 0; k < 3; k++) {
  globalThis.gc();
  await new Promise((r) => setTimeout(r, 50));
}
`;

/** Bytes reported leaked, by who allocated them (the first of ours / llama.cpp / ggml on the stack, else node). */
function run(lsan, n) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "llj-lsan-"));
  try {
    const script = path.join(dir, "cycle.mjs");
    writeFileSync(script, workload(n, dir));
    const r = spawnSync(process.execPath, ["--expose-gc", script], { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "", LD_PRELOAD: lsan,
      LSAN_OPTIONS: `fast_unwind_on_malloc=0:malloc_context_size=40:exitcode=0:log_path=${path.join(dir, "report")}` } });
    if (r.status !== 0) throw new Error(`the workload failed (exit ${r.status}): ${r.stderr.split("\n").slice(-5).join(" ")}`);
    const bytes = { ours: 0, llama: 0, ggml: 0, node: 0 }, examples = {};
    for (const f of readdirSync(dir).filter((x) => x.startsWith("report."))) {
      for (const block of readFileSync(path.join(dir, f), "utf8").split(/\n(?=(?:Direct|Indirect) leak of)/).slice(1)) {
        const m = /^(?:Direct|Indirect) leak of (\d+) byte/.exec(block);
        if (!m) continue;
        const who = /llj_gguf\.node/.test(block) ? "ours" : /libllama/.test(block) ? "llama" : /libggml/.test(block) ? "ggml" : "node";
        bytes[who] += Number(m[1]);
        examples[who] ??= block.split("\n").slice(0, 6).join("\n");
      }
    }
    return { bytes, examples };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const lsan = findLsan();
if (!lsan) {
  console.log("leak-check SKIPPED: no liblsan.so.0 (gcc's LeakSanitizer runtime; Debian: liblsan0)");
  process.exit(0);
}
const t0 = Date.now();
const one = run(lsan, 1), many = run(lsan, cycles);
console.log(`LeakSanitizer (${lsan}), stories260K, bytes reported leaked at exit after 1 and ${cycles} cycles (${((Date.now() - t0) / 1000).toFixed(0)} s):`);
let grew = false;
for (const who of ["ours", "llama", "ggml", "node"]) {
  const judged = who !== "node";
  const growth = many.bytes[who] - one.bytes[who];
  if (judged && growth > 0) grew = true;
  console.log(`  ${who.padEnd(6)} ${String(one.bytes[who]).padStart(8)} → ${String(many.bytes[who]).padStart(8)}${judged ? (growth > 0 ? "   GROWS" : "   flat") : "   (node/V8 at exit: not judged)"}`);
}
if (grew) {
  for (const who of ["ours", "llama", "ggml"]) if (many.examples[who]) console.log(`\nfirst ${who} report:\n${many.examples[who]}`);
  process.exit(1);
}
