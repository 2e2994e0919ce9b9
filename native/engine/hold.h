// What a state (a linearization, a generation session) keeps to hold its model: the bindings'
// ModelUse (native/napi/model.h), which counts the JS model as in use until it is released.
#pragma once

namespace llj {

struct ModelHold {
    virtual ~ModelHold() = default;
};

}  // namespace llj
