#!/usr/bin/env bash
# Rebuilds the dev runtime's wasm and raw chain specs (about 9 minutes from
# clean), runs the pallet's own tests, and records the sources' hash. Commit
# the files it writes: nsn-dev-runtime.wasm, nsn-dev-spec.json,
# nsn-dev-spec-multi.json (three executors) and artifacts.sha256. Needs
# `rustup target add wasm32v1-none` and the rust-src component.
set -euo pipefail
cd "$(dirname "$0")"
cargo test -p pallet-nsn-task-market
cargo build --release -p nsn-dev-runtime -p nsn-dev-spec
cp target/release/wbuild/nsn-dev-runtime/nsn_dev_runtime.compact.compressed.wasm nsn-dev-runtime.wasm
target/release/nsn-dev-spec nsn-dev-runtime.wasm > nsn-dev-spec.json
target/release/nsn-dev-spec nsn-dev-runtime.wasm multi-executor > nsn-dev-spec-multi.json
./sources-hash > artifacts.sha256
echo "wrote nsn-dev-runtime.wasm, nsn-dev-spec.json, nsn-dev-spec-multi.json, artifacts.sha256"
