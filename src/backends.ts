// Which ggml backends this process uses, chosen like node-llama-cpp's `gpu` option.
// The addon links the CPU package's libllama/libggml; GPU backends are ggml libraries
// loaded at run time from node-llama-cpp's GPU packages (same llama.cpp release, same
// libggml-base), so one addon build serves CPU, CUDA and Vulkan.
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { getAddon, getBuildRecord, packageRoot, type NativeDevice } from "./native.js";
import { LljError } from "./errors.js";

export type GpuOption = "auto" | "cuda" | "vulkan" | "metal" | false;

export interface BackendInfo {
  /** The `gpu` option the backends were initialized with. */
  gpu: GpuOption;
  /** GPU backends that loaded ("CUDA", "Vulkan", ...); empty on CPU only. */
  gpuBackends: string[];
  /** Every ggml device available to models, CPU included. */
  devices: NativeDevice[];
  /** GPU libraries that were tried and did not load (missing drivers, no device). */
  failed: string[];
  llamaCppTag: string;
  /** Directory of the llama.cpp libraries the addon uses. */
  libDir: string;
  customBuild: boolean;
  /** Whether ggml's OpenBLAS backend (built with the addon when OpenBLAS was found) is in use for the linear passes. */
  blas: boolean;
}

let current: BackendInfo | undefined;

function findPackageDir(name: string): string | undefined {
  for (let dir = packageRoot; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "node_modules", name);
    if (existsSync(path.join(candidate, "package.json"))) return candidate;
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** Shared libraries of a node-llama-cpp GPU package for this platform, e.g. libggml-cuda.so. */
function gpuLibraries(kind: "cuda" | "vulkan"): string[] {
  const os = { linux: "linux", win32: "win" }[process.platform as string];
  if (!os) return [];
  const pkg = `${os}-${process.arch}-${kind}`;
  const ext = process.platform === "win32" ? ".dll" : ".so";
  const file = (process.platform === "win32" ? "ggml-" : "libggml-") + kind + ext;
  const out: string[] = [];
  for (const name of [pkg, `${pkg}-ext`]) {
    const dir = findPackageDir(`@node-llama-cpp/${name}`);
    if (!dir) continue;
    const bins = path.join(dir, "bins", pkg);
    for (const sub of ["", "fallback"]) {
      const lib = path.join(bins, sub, file);
      if (existsSync(lib)) out.push(lib);
    }
  }
  return out;
}

/**
 * Initializes the ggml backends once per process. `gpu: "auto"` tries CUDA then Vulkan
 * (Metal is part of the macOS build) and falls back to CPU; a named GPU that cannot be
 * loaded is an error; `false` uses the CPU only.
 */
export function initBackends(gpu: GpuOption = "auto"): BackendInfo {
  if (current) {
    // "auto" takes what is there; false (CPU only) is always possible; a named GPU must match.
    if (gpu !== current.gpu && gpu !== "auto" && gpu !== false) {
      throw new LljError(`backends were already initialized with gpu: ${JSON.stringify(current.gpu)}; ` +
        `one process uses one choice (asked for ${JSON.stringify(gpu)})`);
    }
    return current;
  }
  if (![false, "auto", "cuda", "vulkan", "metal"].includes(gpu)) {
    throw new LljError(`gpu must be "auto", "cuda", "vulkan", "metal" or false, not ${JSON.stringify(gpu)}`);
  }
  const addon = getAddon();
  const build = getBuildRecord();
  let candidates: string[] = [];
  if (!build.custom) {
    if (gpu === "cuda" || gpu === "auto") candidates.push(...gpuLibraries("cuda"));
    if (gpu === "vulkan" || gpu === "auto") candidates.push(...gpuLibraries("vulkan"));
  } else if (existsSync(build.libDir)) {
    // A custom build (GGML_BACKEND_DL) keeps its GPU backends beside libggml.
    const wanted = gpu === false ? [] : gpu === "auto" ? ["cuda", "vulkan", "metal"] : [gpu];
    candidates = readdirSync(build.libDir)
      .filter((f) => wanted.some((w) => f.startsWith(`libggml-${w}.`) || f.startsWith(`ggml-${w}.`)))
      .map((f) => path.join(build.libDir, f));
  }
  const blasLibrary = path.join(packageRoot, "build", "Release", "libllj-ggml-blas.so");
  const result = addon.initBackends({ cpuDir: build.libDir, gpuLibraries: candidates,
    blasLibrary: process.env.LLJ_GGUF_BLAS === "0" || !existsSync(blasLibrary) ? "" : blasLibrary });
  const devices = addon.backendDevices();
  const gpuBackends = [...new Set(devices.filter((d) => d.type === "gpu" || d.type === "igpu").map((d) => d.backend))];
  if (gpu !== false && gpu !== "auto" && !gpuBackends.some((b) => b.toLowerCase().startsWith(gpu))) {
    throw new LljError(`gpu: "${gpu}" was requested but no ${gpu} device could be used` +
      (candidates.length ? ` (tried ${candidates.join(", ")}${result.log ? `: ${result.log}` : ""})` :
        " (no prebuilt backend library for this platform is installed)") + `; use gpu: "auto" or false to fall back to the CPU`);
  }
  current = { gpu, gpuBackends, devices, failed: result.failed, llamaCppTag: build.llamaCppTag,
    libDir: build.libDir, customBuild: build.custom, blas: devices.some((d) => d.backend === "BLAS") };
  return current;
}

/** The backends in use, initializing them with `gpu: "auto"` if nothing chose yet. */
export function getBackendInfo(): BackendInfo {
  return current ?? initBackends("auto");
}
