import { loadModel, syntheticModel } from './dist/src/index.js';
import { BENCH_LLAMA } from './dist/bench/run.js';
