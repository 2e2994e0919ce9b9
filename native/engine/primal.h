// Building blocks of a primal pass (defined in linearization.cpp), shared by the
// linearization and by generation through our own graph (native/engine/session.cpp), so that both
// run exactly the same network: the same inputs, masks, embeddings and LM head.
#pragma once

#include "arch.h"
#include "graphs.h"

namespace llj {

// The inputs of a primal pass over n positions, and their values.
GraphInputs primal_inputs(ggml_context * ctx, const ModelSpec & sp, int n);
void set_primal_inputs(const GraphInputs & in, const ModelSpec & sp, int n);
// x [d, n, 1]: the token rows, times the architecture's input scale, plus learned positions.
ggml_tensor * token_embeddings(ggml_context * ctx, const ModelSpec & sp, ggml_tensor * ids, const GraphInputs & in);
// The logits of one column `last` [d, 1] (before any final softcap); *capped gets the
// softcapped logits where the model has a final softcap, else null.
ggml_tensor * lm_head(ggml_context * ctx, const ModelSpec & sp, ggml_tensor * last, bool exact, bool tiled, ggml_tensor ** capped);
// Whether the model's products will use the tiled kernel (quantized/F16 weights in host memory).
bool has_tiled_weights(const ModelSpec & spec);

}  // namespace llj
