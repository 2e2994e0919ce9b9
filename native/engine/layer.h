// A layer as a program of linear blocks, each a primitive of native/engine/primitives.h paired with
// its transpose. The forward (JVP) and transpose (VJP) passes walk the same description, one
// forwards and one backwards, as JAX derives a transpose from per-primitive rules: the two
// cannot drift apart. In the primal pass the same walk records each block's frozen
// coefficient from its input. Ordinary mode (the true derivative) adds to each block the
// derivative term of its coefficient; the description stays the same.
#pragma once

#include "primitives.h"

#include <vector>

namespace llj {

enum class BlockKind {
    Norm,     // x·r·w (RMSNorm), or (x - mean)·r·w + b (LayerNorm): r frozen
    Proj,     // W x with its per-tensor scale (and bias, a constant)
    Attend,   // P v per head: P frozen
    Gate,     // x ⊙ G: G frozen (act(gate(m)) for a gated FFN, act(z)/z for a plain one)
    Experts,  // the routed FFN: routing, weights and gate activations frozen
};

using FrozenSet = std::vector<ggml_tensor *> FrozenTensors::*;  // one frozen coefficient per layer

struct Block {
    explicit Block(BlockKind k) : kind(k) {}
    BlockKind kind;
    Projection p;                  // Proj: the projection; Gate (gated FFN): the gate projection
    FrozenSet coef = nullptr;      // Norm, Attend, Gate: the frozen coefficient it reads
    FrozenSet nhat = nullptr;      // Norm: its normalized input x·r (ordinary mode's derivative term)
    const char * coef_name = "";   // ...its graph name in the primal pass
    bool center = false;           // Norm: LayerNorm's centering
    bool ffn_order = false;        // Proj: (W x + b)·s, as llama.cpp's FFN applies it; else (W x)·s + b
    bool shared = false;           // Norm: the attention branch's own pre-norm, read again (phi2, falcon-7B)
    bool plain = false;            // Gate: a plain activation, its factor frozen from the block's own input
};

// The blocks from a layer's input to one branch output (the Attn or Mlp tap).
struct Branch {
    Tap tap;
    std::vector<Block> blocks;
};

// Residual steps h ← h + Σ_b branch_b(h): sequential layers are two steps (attention, then
// FFN), parallel ones one step of both branches.
struct LayerProgram {
    std::vector<std::vector<Branch>> steps;
};

LayerProgram layer_program(ggml_context * ctx, const ModelSpec & spec, int il);

// A frozen coefficient of the primal pass: named "<name>-<il>", kept as a graph output
// unless BuildOptions::keep_frozen is off.
ggml_tensor * freeze(ggml_tensor * t, const char * name, int il, const BuildOptions & opt);

// The layer on h [d, n, B]: the new residual stream, or the output of the branch `stop`
// names (Tap::Attn or Tap::Mlp; Tap::Output: the whole layer). Primal passes fill fz's
// entries of this layer.
ggml_tensor * layer_forward(ggml_context * ctx, const ModelSpec & spec, int il, FrozenTensors & fz, const GraphInputs & in,
                            ggml_tensor * h, const BuildOptions & opt, Tap stop);

// Its transpose: the cotangent d on the layer's output (or, with `start` Tap::Attn or
// Tap::Mlp, on that branch's output) → the cotangent on the layer's input. `at_last`: the
// frozen set at the last position when d holds that position only (BuildOptions::last_only);
// the cotangent then spreads over every position at the attention.
ggml_tensor * layer_transpose(ggml_context * ctx, const ModelSpec & spec, int il, const FrozenTensors & fz,
                              const FrozenTensors * at_last, const GraphInputs & in, ggml_tensor * d,
                              const BuildOptions & opt, Tap start);

}  // namespace llj
