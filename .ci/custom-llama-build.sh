#!/usr/bin/env bash
# Builds llama.cpp (CPU) from node-llama-cpp's bundle, exactly as the README's "Your own
# llama.cpp build" says, rebuilds the addon against it, runs the stories260K suites on it,
# then restores the default (prebuilt) addon. The llama.cpp build is cached outside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=$(node -p "require('./node_modules/node-llama-cpp/llama/llama.cpp.info.json').tag")
src="${LLJ_CI_LLAMA_DIR:-$HOME/.cache/llj-gguf/llama.cpp-$tag-cpu}"
if [ ! -f "$src/build/bin/.llj-complete" ]; then
  rm -rf "$src"
  mkdir -p "$(dirname "$src")"
  git clone -q node_modules/node-llama-cpp/llama/gitRelease.bundle "$src"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF > /dev/null
  cmake --build "$src/build" -j "$(nproc)" --target llama > "$src/build.log" 2>&1 || { tail -30 "$src/build.log"; exit 1; }
  touch "$src/build/bin/.llj-complete"
fi
restore() { npm run --silent build:native > /dev/null; }
trap restore EXIT
LLJ_LLAMA_CPP_LIB_DIR="$src/build/bin" LLJ_LLAMA_CPP_SOURCE="$src" npm run --silent build:native
node -e "const r=require('./build/Release/llj-build.json'); if(!r.custom) { console.error('addon not built against the custom llama.cpp'); process.exit(1) }"
linked=$(ldd build/Release/llj_gguf.node)
case "$linked" in
  *"$src/build/bin/libllama.so"*) ;;
  *) echo "addon does not link the custom libllama"; echo "$linked"; exit 1 ;;
esac
NODE_OPTIONS=--experimental-vm-modules npx jest dist/test/model.test.js dist/test/errors.test.js dist/test/linearization.test.js
