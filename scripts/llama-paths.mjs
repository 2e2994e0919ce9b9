// Where the pinned llama.cpp lives: its source (headers, vocab files) extracted from the git
// bundle that node-llama-cpp ships, and its prebuilt libraries from the platform package.
// Shared by the native build (scripts/build-native.mjs) and the runtime (src/native.ts reads
// the build record this writes).
import { existsSync, readFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** Directory of an installed package, found the way Node looks up node_modules. */
export function packageDir(name) {
  for (let dir = packageRoot; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "node_modules", name);
    if (existsSync(path.join(candidate, "package.json"))) return candidate;
    if (path.dirname(dir) === dir) return undefined;
  }
}

export function nodeLlamaCppDir() {
  const dir = packageDir("node-llama-cpp");
  if (!dir) throw new Error("llj-gguf: node-llama-cpp is not installed");
  return dir;
}

export function llamaCppTag() {
  const info = JSON.parse(readFileSync(path.join(nodeLlamaCppDir(), "llama", "llama.cpp.info.json"), "utf8"));
  return info.tag;
}

/** The prebuilt package of this platform, as node-llama-cpp names them. */
export function platformPackage() {
  const os = { linux: "linux", darwin: "mac", win32: "win" }[process.platform];
  if (!os) throw new Error(`llj-gguf: no prebuilt llama.cpp for platform ${process.platform}`);
  const name = os === "mac" && process.arch === "arm64" ? "mac-arm64-metal" : `${os}-${process.arch}`;
  return name;
}

export function prebuiltBinsDir(pkg = platformPackage()) {
  const dir = packageDir(`@node-llama-cpp/${pkg}`);
  if (!dir) return undefined;
  const bins = path.join(dir, "bins", pkg);
  return existsSync(bins) ? bins : undefined;
}

/**
 * Source tree of the pinned llama.cpp: LLJ_LLAMA_CPP_SOURCE if set, else extracted (once)
 * from node-llama-cpp's git bundle into .cache/. Only the parts the addon and the test
 * generator read are checked out.
 */
export function llamaCppSource() {
  if (process.env.LLJ_LLAMA_CPP_SOURCE) return path.resolve(process.env.LLJ_LLAMA_CPP_SOURCE);
  const tag = llamaCppTag();
  const dir = path.join(packageRoot, ".cache", `llama.cpp-${tag}`);
  const done = path.join(dir, ".llj-extracted");
  // Bump when the set of extracted paths changes, so that an older extraction is redone.
  const stamp = `${tag} v2\n`;
  if (existsSync(done) && readFileSync(done, "utf8") === stamp) return dir;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.dirname(dir), { recursive: true });
  const bundle = path.join(nodeLlamaCppDir(), "llama", "gitRelease.bundle");
  execFileSync("git", ["clone", "-q", "--no-checkout", bundle, dir], { stdio: "inherit" });
  execFileSync("git", ["-C", dir, "-c", "advice.detachedHead=false", "checkout", "-q", "HEAD", "--",
    "include", "ggml/include", "ggml/src", "src", "models"], { stdio: "inherit" });
  writeFileSync(done, stamp);
  return dir;
}
