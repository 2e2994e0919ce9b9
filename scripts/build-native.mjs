// Builds the native addon (build/Release/llj_gguf.node) with cmake-js against the pinned
// llama.cpp. LLJ_LLAMA_CPP_LIB_DIR selects a user's own build of the same release
// (its directory with libllama/libggml/libggml-base and, for GGML_BACKEND_DL builds, the
// backend libraries); LLJ_LLAMA_CPP_SOURCE its source tree.
import { spawnSync } from "node:child_process";
import { writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { packageRoot, llamaCppSource, llamaCppTag, prebuiltBinsDir, platformPackage } from "./llama-paths.mjs";

const require = createRequire(import.meta.url);
const tag = llamaCppTag();
const source = llamaCppSource();
const custom = process.env.LLJ_LLAMA_CPP_LIB_DIR;
const libDir = custom ? path.resolve(custom) : prebuiltBinsDir();
if (!libDir) {
  console.error(`llj-gguf: no prebuilt llama.cpp package @node-llama-cpp/${platformPackage()} is installed; ` +
    "build llama.cpp from the bundle and set LLJ_LLAMA_CPP_LIB_DIR (see README).");
  process.exit(1);
}

const cmakeJs = path.join(path.dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
const args = [cmakeJs, process.argv.includes("--rebuild") ? "rebuild" : "compile",
  "--parallel", String(Math.max(2, (await import("node:os")).cpus().length)),
  `--CDLLAMA_CPP_SOURCE=${source}`, `--CDLLAMA_CPP_LIB_DIR=${libDir}`, `--CDLLAMA_CPP_TAG=${tag}`];
console.log(`llj-gguf: building the addon against llama.cpp ${tag} (${custom ? "custom build" : "prebuilt"} in ${libDir})`);
const r = spawnSync(process.execPath, args, { cwd: packageRoot, stdio: "inherit" });
if (r.status !== 0) process.exit(r.status ?? 1);

// The runtime reads this to find the backends (CPU variants, GPU) of the libraries it links.
mkdirSync(path.join(packageRoot, "build", "Release"), { recursive: true });
writeFileSync(path.join(packageRoot, "build", "Release", "llj-build.json"), JSON.stringify({
  llamaCppTag: tag, libDir, custom: Boolean(custom), source,
}, null, 2) + "\n");
