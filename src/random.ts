// Seeded randomness: every randomized analysis takes a seed, and the same seed gives the same
// numbers bit for bit (mulberry32 for uniforms, Box–Muller for normals).

/** mulberry32: a stream of 32-bit unsigned integers from a 32-bit seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** A stream of uniforms in (0, 1) from a 32-bit seed (never 0: Box–Muller takes its log). */
export function uniformStream(seed: number): () => number {
  const next = mulberry32(seed);
  return () => (next() + 0.5) / 4294967296;
}

/** A stream of uniforms in [0, 1) from a 32-bit seed (the sampler's draws). */
export function uniformStream01(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** `count` standard normals drawn from a uniform stream. */
export function gaussians(count: number, uniform: () => number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

/** `count` standard normals from `seed`: the same seed, the same block. */
export function seededGaussian(count: number, seed: number): Float32Array {
  return gaussians(count, uniformStream(seed));
}
