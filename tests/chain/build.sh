#!/usr/bin/env bash
# Rebuilds the dev runtime's wasm and raw chain specs (about 9 minutes from
# clean), runs the pallet's own tests, and records the sources' hash. Commit
# the files it writes: nsn-dev-runtime.wasm, nsn-dev-spec.json,
# nsn-dev-spec-multi.json (three executors), the parachain flavour's
# nsn-dev-para-runtime.wasm and nsn-dev-para-spec.json, and
# artifacts.sha256. Needs
# `rustup target add wasm32v1-none` and the rust-src component.
set -euo pipefail
cd "$(dirname "$0")"
cargo test -p pallet-nsn-task-market
wasm=target/release/wbuild/nsn-dev-runtime/nsn_dev_runtime.compact.compressed.wasm
cargo build --release -p nsn-dev-runtime -p nsn-dev-spec
cp "$wasm" nsn-dev-runtime.wasm
target/release/nsn-dev-spec nsn-dev-runtime.wasm > nsn-dev-spec.json
target/release/nsn-dev-spec nsn-dev-runtime.wasm multi-executor > nsn-dev-spec-multi.json
# The parachain flavour (Aura), which polkadot-omni-node runs in dev mode.
cargo build --release -p nsn-dev-runtime -p nsn-dev-spec --features nsn-dev-spec/parachain
cp "$wasm" nsn-dev-para-runtime.wasm
target/release/nsn-dev-spec nsn-dev-para-runtime.wasm > nsn-dev-para-spec.json
./sources-hash > artifacts.sha256
echo "wrote nsn-dev-runtime.wasm, nsn-dev-spec.json, nsn-dev-spec-multi.json," \
    "nsn-dev-para-runtime.wasm, nsn-dev-para-spec.json, artifacts.sha256"
