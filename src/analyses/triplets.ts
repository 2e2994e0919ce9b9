// What the SVD routes take and return (shared by analyses/svd.ts and analyses/lanczos.ts).

export interface SvdOptions {
  /**
   * Input position i for J_i (negative counts from the end; default -1, the last), "all" for
   * [J_1 … J_n], or "each" for the top-k of every J_i in one sweep (an `EachTokenTriplets`).
   */
  token?: number | "all" | "each";
  /** Seed of the randomized route's start blocks (default 0): the same seed gives the same result. */
  seed?: number;
  /** token "each", randomized route: memory one batched pass's tangents may use (default 256 MiB); more tokens per pass read the weights fewer times. */
  batchMemoryBytes?: number;
  /** Singular triplets to return (default 8). */
  k?: number;
  /**
   * "exact": the Jacobian from d VJPs, then a dense SVD (all singular values);
   * "randomized": a range finder driven only by batched JVP/VJP products, never forming J
   * (O(k) products; for long prompts and large models); "auto" (default): exact for d ≤ 256.
   */
  method?: "exact" | "randomized" | "auto";
  /** Randomized route: block size k + oversampling (default 10). */
  oversampling?: number;
  /** Randomized route: at most this many Krylov blocks, each one batch of VJPs and one of JVPs (default 16). */
  maxIterations?: number;
  /**
   * Randomized route: stop once every returned triplet has ‖J v_j − σ_j u_j‖ ≤ tolerance·σ_j
   * (default 1e-4). Then each σ_j lies within tolerance·σ_j of a true singular value.
   */
  tolerance?: number;
  /** Randomized route: called after each Krylov block with blocks done / maxIterations. */
  onProgress?: (progress: number) => void;
  /** Stops the products (the call then rejects with ABORTED). */
  signal?: AbortSignal;
}

export interface SingularTriplets {
  /** The position decomposed, or "all". */
  token: number | "all";
  /** Singular values, descending [k]. */
  values: Float32Array;
  /** Left singular vectors (output space), row-major [k × d]: u_j = u.subarray(j·d, (j+1)·d). */
  u: Float32Array;
  /** Right singular vectors (input space), row-major [k × c] with c = d (one token) or n·d ("all"). */
  v: Float32Array;
  /** Width of a right singular vector. */
  vWidth: number;
  /** The exact route: all singular values; the randomized route: those of the sketch. */
  allValues: Float32Array;
  method: "exact" | "randomized";
  /**
   * Randomized route: an estimate of the spectral-norm error of the rank-k approximation
   * (the (k+1)-th Ritz value); 0 for the exact route.
   */
  residualEstimate: number;
  /** ‖J v_j − σ_j u_j‖ per triplet, computed from the products (0 for the exact route). */
  residuals: Float32Array;
  /** Randomized route: Krylov blocks used (0 for the exact route). */
  iterations: number;
  /** Whether every residual met the tolerance (always true for the exact route). */
  converged: boolean;
}

/** `svd({ token: "each" })`: the top-k triplets of every J_i, one entry per input position. */
export interface EachTokenTriplets {
  token: "each";
  /** positions[i] decomposes J_i (its `token` is i). */
  positions: SingularTriplets[];
  method: "exact" | "randomized";
  /** Whether every position's triplets met the tolerance. */
  converged: boolean;
}
