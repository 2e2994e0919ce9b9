// Public API of llj-gguf.
export { loadModel, Model } from "./model.js";
export type { LoadModelOptions, TensorInfo, TokenizeOptions, ReferenceForward, ReferenceForwardOptions } from "./model.js";
export { Linearization } from "./linearization.js";
export type { LinearizeOptions, PassOptions, LayerTap, Jacobian, Reconstruction, NonlinearReconstruction } from "./linearization.js";
export type { SvdOptions, SingularTriplets, EachTokenTriplets, DecodedToken, Attribution, LayerQuantity, EmergenceRow } from "./analysis.js";
export { initBackends, getBackendInfo } from "./backends.js";
export type { GpuOption, BackendInfo } from "./backends.js";
export { readGgufSummary, SUPPORTED_ARCHITECTURES } from "./gguf.js";
export type { HyperParameters, RopeParameters, GgufSummary } from "./gguf.js";
export { syntheticModel, dequantizedSyntheticModel, writeSyntheticModel, quantizeModel, TINY_LLAMA } from "./synthetic.js";
export type { SyntheticSpec, SyntheticArchitecture, QuantType } from "./synthetic.js";
export { LljError } from "./errors.js";
export type { LljErrorCode } from "./errors.js";
export type { DisposeOptions } from "./lifecycle.js";
export { writeNpy, readNpy } from "./npy.js";
