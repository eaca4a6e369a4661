#!/usr/bin/env bash
# Builds polkadot-omni-node (the node that runs parachain runtimes) from
# crates.io, once per machine, for the real-node tests and the chain bench.
# Too heavy for CI: about 66 minutes on two cores, with nothing else building.
#
#   bash tests/chain/omni-node.sh            # builds, then prints the binary's path
#   export NSN_OMNI_NODE=$(bash tests/chain/omni-node.sh --path)
#
# Needs clang and libclang-dev (RocksDB's bindings) and protoc (litep2p's
# protocol buffers) — on Debian: apt-get install clang libclang-dev
# protobuf-compiler — and the wasm32-unknown-unknown and wasm32v1-none
# targets and the rust-src component (the node's test runtimes are built to
# wasm), which the script adds itself. The build reuses its target directory,
# so a build stopped half way resumes.
set -euo pipefail
version=0.24.0
root=${NSN_OMNI_NODE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/nsn-lane1/omni-node-$version}
bin="$root/bin/polkadot-omni-node"
if [ "${1:-}" = "--path" ]; then
    echo "$bin"
    exit 0
fi
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
missing=()
command -v clang >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || missing+=(libclang-dev)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "polkadot-omni-node needs: apt-get install ${missing[*]}" >&2
    exit 1
fi
rustup target add wasm32-unknown-unknown wasm32v1-none >&2
rustup component add rust-src >&2
mkdir -p "$root"
# CARGO_TARGET_DIR keeps the artifacts of a stopped build; a separate
# CARGO_BUILD_BUILD_DIR deadlocks the nested wasm builds.
CARGO_TARGET_DIR="$root/target" cargo install polkadot-omni-node --version "$version" \
    --locked --root "$root" >&2
echo "$bin"
