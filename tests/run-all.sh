#!/usr/bin/env bash
# Runs every test: installs the pinned chopsticks (for the real-chain tests)
# from tests/chain's lock file when it is missing or stale, then the whole
# suite (the default build includes the real-chain backend), then the soak.
set -euo pipefail
cd "$(dirname "$0")/.."

chain=tests/chain
stamp="$chain/node_modules/.lock-stamp"
if [ ! -x "$chain/node_modules/.bin/chopsticks" ] || ! cmp -s "$chain/package-lock.json" "$stamp" 2>/dev/null; then
    echo "== installing chopsticks (npm ci in $chain)"
    (cd "$chain" && npm ci --no-audit --no-fund)
    cp "$chain/package-lock.json" "$stamp"
fi

if [ -n "${NSN_OMNI_NODE:-}" ]; then
    echo "== NSN_OMNI_NODE=$NSN_OMNI_NODE: the real-node tests run against polkadot-omni-node"
else
    echo "== NSN_OMNI_NODE is not set: the real-node tests skip (each says SKIPPED; tests/chain/omni-node.sh builds the node)"
fi

cargo test --locked "$@"

# The seeded soak (examples/soak.rs, built by `cargo test`): 1,000 jobs
# under every kind of fault; it exits non-zero if a job is lost, a call is
# sent twice or a slash is wrongful. Only for the whole suite (no filter).
if [ "$#" -eq 0 ]; then
    echo "== soak: 1000 jobs, seed 1, all faults (the sidecar with NSN's semantics)"
    cargo run --locked --quiet --example soak -- --tasks 1000 --seed 1 --fault-every-ms 200
    echo "== soak: 1000 jobs, seed 2, three sidecars with the reference sidecar's semantics (deserved slashes)"
    cargo run --locked --quiet --example soak -- --tasks 1000 --seed 2 --sidecars 3 --fault-every-ms 200 \
        --faults sidecar,node,connection,pool-drop,pool-delay,lane0-storm,meddler,poison,pending-cap,requester-fail,reorg,finality-stall
fi
