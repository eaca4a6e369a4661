//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

use nsn_lane1::chain::dev::{BlockMode, DevChain, DevConfig, DevGenesis, DevSubmitter};
use nsn_lane1::chain::{
    Inclusion, MarketCall, MarketError, MarketEvent, Pooled, SubmitError, SubmitExt,
};
use nsn_lane1::task::Balance;
pub use nsn_lane1::task::{Lane, Priority, TaskId, UNIT};
use tower::ServiceExt;

/// A valid CIDv1 (raw, sha2-256).
pub const INPUT_CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
/// Another valid CID, for outputs.
pub const OUTPUT_CID: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

/// An instant-mode chain on the development genesis, without auto-attest.
pub fn chain() -> DevChain {
    chain_with(|_| {})
}

/// An instant-mode chain, its config adjusted by `f`; auto-attest off unless `f` sets it.
pub fn chain_with(f: impl FnOnce(&mut DevConfig)) -> DevChain {
    let mut config = DevConfig {
        genesis: DevGenesis::development(),
        block_mode: BlockMode::Instant,
        auto_attest: None,
        max_pool: 1024,
        finality_lag: None,
    };
    f(&mut config);
    DevChain::new(config).expect("valid dev config")
}

/// A Lane 1 (or Lane 0) task creation for `model`.
pub fn create(lane: Lane, model: &str) -> MarketCall {
    create_with(lane, model, 50, UNIT)
}

/// A task creation with a deadline and escrow.
pub fn create_with(lane: Lane, model: &str, deadline_blocks: u32, escrow: Balance) -> MarketCall {
    MarketCall::CreateTaskIntent {
        lane,
        priority: Priority::Normal,
        model_requirements: model.as_bytes().to_vec(),
        input_cid: INPUT_CID.as_bytes().to_vec(),
        compute_budget: 1_000,
        deadline_blocks,
        escrow_amount: escrow,
    }
}

/// The NSN chain at a tenth of its timing, for the benches: a block every
/// 600 ms, finality two behind, validators attesting, a deep pool.
pub const TENTH_BLOCK: std::time::Duration = std::time::Duration::from_millis(600);
/// Blocks finality trails the best block by, with [`TENTH_BLOCK`].
pub const TENTH_LAG: u32 = 2;

/// A dev chain at [`TENTH_BLOCK`] and [`TENTH_LAG`].
pub fn tenth_scale_chain() -> DevChain {
    chain_with(|c| {
        c.block_mode = BlockMode::Interval(TENTH_BLOCK);
        c.finality_lag = Some(TENTH_LAG);
        c.auto_attest = Some(90);
        c.max_pool = 8192;
    })
}

/// Real timing for a harness: a block every 20 ms, finality two blocks
/// behind, validators attesting.
pub fn timed(c: &mut DevConfig) {
    c.block_mode = BlockMode::Interval(std::time::Duration::from_millis(20));
    c.finality_lag = Some(2);
    c.auto_attest = Some(90);
}

/// A Lane 1 task for `model` on an input in the sidecar's store, due in
/// 1000 blocks.
pub fn lane1_task(model: &str, input: &nsn_lane1::task::Cid) -> MarketCall {
    lane1_task_due(model, input, 1_000)
}

/// As [`lane1_task`], due in `deadline_blocks`.
pub fn lane1_task_due(
    model: &str,
    input: &nsn_lane1::task::Cid,
    deadline_blocks: u32,
) -> MarketCall {
    MarketCall::CreateTaskIntent {
        lane: Lane::Lane1,
        priority: Priority::Normal,
        model_requirements: model.as_bytes().to_vec(),
        input_cid: input.as_bytes().to_vec(),
        compute_budget: 0,
        deadline_blocks,
        escrow_amount: UNIT,
    }
}

/// Submits and expects inclusion.
pub async fn ok(sub: &DevSubmitter, call: MarketCall) -> Inclusion {
    let name = call.name();
    match sub.clone().submit(call).await {
        Ok(inc) => inc,
        Err(e) => panic!("{name} failed: {e}"),
    }
}

/// Submits and expects a task-market dispatch error.
pub async fn err(sub: &DevSubmitter, call: MarketCall) -> MarketError {
    let name = call.name();
    match sub.clone().submit(call).await {
        Ok(inc) => panic!("{name} succeeded: {inc:?}"),
        Err(e) => e
            .market_error()
            .unwrap_or_else(|| panic!("{name} failed without a market error: {e}")),
    }
}

/// Submits and returns the raw error.
pub async fn submit_err(sub: &DevSubmitter, call: MarketCall) -> SubmitError {
    match sub.clone().submit(call).await {
        Ok(inc) => panic!("succeeded: {inc:?}"),
        Err(e) => e,
    }
}

/// The task id a `TaskCreated` in the inclusion announced.
pub fn created_id(inc: &Inclusion) -> TaskId {
    nsn_lane1::chain::created_task_id(&inc.events).expect("a TaskCreated event")
}

/// Puts a call into the pool (after the submitter is ready) and returns it,
/// pooled, without waiting for a block; `.await` it for its inclusion.
pub async fn send(sub: &DevSubmitter, call: MarketCall) -> Pooled {
    sub.clone()
        .oneshot(call)
        .await
        .expect("accepted by the pool")
}

/// A reference sidecar served by tonic on a loopback port, on its own
/// runtime, so that a test can kill it the way a crash would: every
/// connection task dies at once.
pub struct TestSidecar {
    pub addr: std::net::SocketAddr,
    pub sidecar: nsn_lane1::sidecar::server::ReferenceSidecar,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestSidecar {
    /// Starts a sidecar on 127.0.0.1:0.
    pub fn start() -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("loopback address"))
    }

    /// Starts a sidecar on a given address (to restart one where it was).
    pub fn start_at(addr: std::net::SocketAddr) -> Self {
        Self::start_with(addr, Default::default())
    }

    /// Starts a sidecar on `addr` with `limits`.
    pub fn start_with(
        addr: std::net::SocketAddr,
        limits: nsn_lane1::sidecar::server::SidecarLimits,
    ) -> Self {
        Self::start_serving(addr, limits, Default::default())
    }

    /// Starts a sidecar on 127.0.0.1:0 that reads inputs from `store`
    /// (sidecars sharing one store, as they would share IPFS).
    pub fn start_sharing(store: nsn_lane1::sidecar::store::BlobStore) -> Self {
        Self::start_serving(
            "127.0.0.1:0".parse().expect("loopback address"),
            Default::default(),
            store,
        )
    }

    /// Starts a sidecar on `addr` with `limits`, reading from `store`.
    pub fn start_serving(
        addr: std::net::SocketAddr,
        limits: nsn_lane1::sidecar::server::SidecarLimits,
        store: nsn_lane1::sidecar::store::BlobStore,
    ) -> Self {
        use nsn_lane1::sidecar::server::ReferenceSidecar;
        // A sidecar just killed at this address lets go of it in the
        // background: wait (a bounded number of tries) until it is free.
        let mut tries = 0;
        let std_listener = loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("bind loopback {addr}: {e}"),
            }
        };
        std_listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = std_listener.local_addr().expect("bound address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("sidecar runtime");
        let sidecar = ReferenceSidecar::with_limits(store, limits);
        let serving = sidecar.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
            serving
                .serve(listener, std::future::pending())
                .await
                .expect("sidecar serves");
        });
        TestSidecar {
            addr,
            sidecar,
            runtime: Some(runtime),
        }
    }

    /// The endpoint URI.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client with test-friendly timeouts.
    pub fn client(&self) -> nsn_lane1::sidecar::client::SidecarClient {
        client_for(&self.endpoint())
    }

    /// Kills the sidecar: its runtime and every connection on it stop now.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A sidecar client for `endpoint` with short connect and cancel waits.
pub fn client_for(endpoint: &str) -> nsn_lane1::sidecar::client::SidecarClient {
    use nsn_lane1::sidecar::client::{SidecarClient, SidecarConfig};
    let mut config = SidecarConfig::new(endpoint);
    config.connect_timeout = std::time::Duration::from_secs(2);
    config.cancel_wait = std::time::Duration::from_secs(5);
    config.timeout_grace = std::time::Duration::from_millis(500);
    SidecarClient::connect_lazy(config).expect("valid client config")
}

/// Waits for a future, failing the test if it takes longer than 10 s.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits for a future, failing the test if it takes longer than `secs`.
pub async fn within_secs<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s"),
    }
}

/// A whole Lane 1 node on the dev chain (Bob executes) with a real sidecar.
pub struct Harness {
    pub chain: DevChain,
    pub sidecar: TestSidecar,
    pub node: nsn_lane1::node::Node,
    pub requester: DevSubmitter,
    pub metrics: nsn_lane1::telemetry::metrics::Lane1Metrics,
}

impl Harness {
    /// Starts a node with `config` on a chain configured by `chain_cfg`.
    pub fn start(
        config: nsn_lane1::executor::ExecutorConfig,
        chain_cfg: impl FnOnce(&mut DevConfig),
    ) -> Self {
        let chain = chain_with(chain_cfg);
        Self::start_on(chain, config, |s| s)
    }

    /// Starts a node on `chain`, its submitter wrapped by `wrap`.
    pub fn start_on<W>(
        chain: DevChain,
        config: nsn_lane1::executor::ExecutorConfig,
        wrap: impl FnOnce(DevSubmitter) -> W,
    ) -> Self
    where
        W: tower::Service<MarketCall, Response = Pooled, Error = SubmitError>
            + Clone
            + Send
            + Sync
            + 'static,
        W::Future: Send,
    {
        use nsn_lane1::node::{Node, NodeParts};
        let sidecar = TestSidecar::start();
        let metrics = nsn_lane1::telemetry::metrics::Lane1Metrics::default();
        let node = Node::spawn(
            config,
            NodeParts::new(
                chain.clone(),
                wrap(chain.submitter(nsn_lane1::task::AccountId::BOB)),
                nsn_lane1::task::AccountId::BOB,
                sidecar.client(),
            )
            .metrics(metrics.clone()),
        );
        let requester = chain.submitter(nsn_lane1::task::AccountId::ALICE);
        Harness {
            chain,
            sidecar,
            node,
            requester,
            metrics,
        }
    }

    /// Creates a Lane 1 task for `model` with `params`' input, and asks the
    /// chain to assign it. Returns its id and the executor picked.
    pub async fn post(&self, model: &str, input: &[u8]) -> (TaskId, nsn_lane1::task::AccountId) {
        let cid = self
            .sidecar
            .sidecar
            .store()
            .put(input.to_vec())
            .expect("store input");
        let call = MarketCall::CreateTaskIntent {
            lane: Lane::Lane1,
            priority: Priority::Normal,
            model_requirements: model.as_bytes().to_vec(),
            input_cid: cid.as_bytes().to_vec(),
            compute_budget: 1_000,
            deadline_blocks: 10_000,
            escrow_amount: UNIT,
        };
        let id = created_id(&ok(&self.requester, call).await);
        let inc = ok(
            &self.requester,
            MarketCall::AcceptAssignment { task_id: id },
        )
        .await;
        let executor = inc
            .events
            .iter()
            .find_map(|e| match e {
                MarketEvent::TaskAssigned { executor, .. } => Some(*executor),
                _ => None,
            })
            .expect("TaskAssigned");
        (id, executor)
    }

    /// Posts a task (see [`post`](Self::post)) and waits for its
    /// `TaskVerified` in a finalized block (validators must attest:
    /// `auto_attest`).
    pub async fn post_until_verified(&self, model: &str, input: &[u8]) -> TaskId {
        use futures::StreamExt;
        use nsn_lane1::chain::ChainPort;
        let mut blocks = self.chain.finalized_blocks(None);
        let (id, _) = self.post(model, input).await;
        within("TaskVerified", async {
            while let Some(Ok(block)) = blocks.next().await {
                if block.events.iter().any(
                    |r| matches!(r.event, MarketEvent::TaskVerified { task_id, .. } if task_id == id),
                ) {
                    return;
                }
            }
            panic!("the block stream ended");
        })
        .await;
        id
    }

    /// Waits (at most 10 s, naming `what` if not) until the sidecar shows
    /// the task's run in `state`.
    pub async fn run_reaches(
        &self,
        what: &str,
        run: impl Into<nsn_lane1::task::RunId>,
        state: nsn_lane1::sidecar::server::RunState,
    ) {
        let run = run.into();
        within(what, self.sidecar.sidecar.wait_for(&run.to_string(), state)).await;
    }

    /// The task's status on chain.
    pub fn status(&self, id: TaskId) -> nsn_lane1::task::TaskStatus {
        chain_status(&self.chain, id)
    }

    /// Waits (on board changes, at most 10 s) for the task to be done here.
    pub async fn done(&self, id: TaskId) -> nsn_lane1::lifecycle::TaskOutcome {
        within("task to finish", self.node.board.wait_done(id)).await
    }
}

/// Sends `call` as the node's other half (its Lane 0 side, which signs
/// with the node's key) and waits for it to land: its nonce goes into the
/// node's record, as one process's would.
pub async fn as_node(h: &Harness, sub: &DevSubmitter, call: MarketCall) -> Inclusion {
    let pooled = tower::ServiceExt::oneshot(sub.clone(), call)
        .await
        .expect("pooled");
    if let Some(nonce) = pooled.nonce() {
        h.node.nonces.signed(nonce);
    }
    pooled.await.expect("included")
}

/// Slashes of `who` that its own calls caused (a `fail_task` with a
/// slashing reason it sent), counted by the chain.
pub fn own_slashes(chain: &DevChain, who: nsn_lane1::task::AccountId) -> u32 {
    chain.with_market(|m| m.slashes_by_own_calls(&who))
}

/// Slashes of `who` by the pallet's own rules (its preemption hook, a
/// missed verification deadline, a low score), counted by the chain.
pub fn rule_slashes(chain: &DevChain, who: nsn_lane1::task::AccountId) -> u32 {
    use nsn_lane1::chain::dev::SlashCause;
    chain.with_market(|m| {
        m.slashes(&who)
            .iter()
            .filter(|(cause, _)| {
                matches!(
                    cause,
                    SlashCause::PreemptionHook
                        | SlashCause::VerificationTimeout
                        | SlashCause::LowScore
                )
            })
            .map(|(_, n)| *n)
            .sum()
    })
}

/// The extrinsics `who` sent for `task` with the call `name`, counted from
/// the chain's blocks (refused ones included).
pub fn calls_on_chain(
    chain: &DevChain,
    who: nsn_lane1::task::AccountId,
    name: &str,
    task: TaskId,
) -> usize {
    use nsn_lane1::chain::dev::Origin;
    chain
        .extrinsics()
        .iter()
        .filter(|x| {
            x.origin == Origin::Signed(who)
                && x.call.name() == name
                && x.call.task_id() == Some(task)
        })
        .count()
}

/// A task's status on the dev chain.
pub fn chain_status(chain: &DevChain, id: TaskId) -> nsn_lane1::task::TaskStatus {
    chain
        .with_market(|m| m.task(id).map(|t| t.status))
        .expect("task exists")
}

#[cfg(feature = "real-chain")]
mod chopsticks_support {
    /// Chopsticks on a free loopback port, running the committed chain spec;
    /// killed when dropped.
    pub struct Chopsticks {
        pub url: String,
        _child: tokio::process::Child,
    }

    pub async fn chopsticks() -> Chopsticks {
        chopsticks_in("Instant").await
    }

    /// Chopsticks building blocks in `mode` (`Instant` or `Batch`).
    pub async fn chopsticks_in(mode: &str) -> Chopsticks {
        chopsticks_with(mode, "nsn-dev-spec.json").await
    }

    /// Chopsticks running the chain spec `spec` (a file in `tests/chain`).
    pub async fn chopsticks_with(mode: &str, spec: &str) -> Chopsticks {
        use std::process::Stdio;
        use tokio::io::{AsyncBufReadExt, BufReader};
        use tokio::process::Command;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chain");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(format!("{dir}/node_modules/.bin/chopsticks"))
            .current_dir(dir)
            .args(["--chain-spec", spec, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--build-block-mode", mode])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chopsticks is installed (npm ci in tests/chain)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("RPC listening") {
                    return;
                }
            }
            panic!("chopsticks exited before listening");
        })
        .await
        .expect("chopsticks listens within 60 s");
        // Keep draining its output so it never blocks on a full pipe; with
        // NSN_CHOPSTICKS_LOG set, pass it on (for debugging a chain test).
        let echo = std::env::var_os("NSN_CHOPSTICKS_LOG").is_some();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("chopsticks: {line}");
                }
            }
        });
        Chopsticks {
            url: format!("ws://127.0.0.1:{port}"),
            _child: child,
        }
    }
}
#[cfg(feature = "real-chain")]
#[allow(unused_imports)]
pub use chopsticks_support::{Chopsticks, chopsticks, chopsticks_in, chopsticks_with};

#[cfg(feature = "real-chain")]
mod omni_node_support {
    /// `polkadot-omni-node` in its dev mode (a block every `block_ms`, each
    /// final at once) running a spec of the runtime's parachain flavour, on
    /// a free loopback port and a temporary database; killed when dropped.
    pub struct OmniNode {
        pub url: String,
        pub block_ms: u64,
        _child: tokio::process::Child,
    }

    /// The environment variable naming the node's binary (built by
    /// `tests/chain/omni-node.sh`).
    pub const OMNI_NODE_ENV: &str = "NSN_OMNI_NODE";

    /// The node, if `NSN_OMNI_NODE` names one; otherwise `None`, said on
    /// the test's standard error (past the test harness's capture, so a
    /// skip is seen) by `test`.
    pub async fn omni_node(test: &str, spec: &str, block_ms: u64) -> Option<OmniNode> {
        omni_node_with(test, spec, block_ms, &[]).await
    }

    /// As [`omni_node`], with `args` added to the node's command line.
    pub async fn omni_node_with(
        test: &str,
        spec: &str,
        block_ms: u64,
        args: &[&str],
    ) -> Option<OmniNode> {
        use std::io::Write;
        use std::process::Stdio;
        use tokio::io::{AsyncBufReadExt, BufReader};
        use tokio::process::Command;
        let Some(bin) = std::env::var_os(OMNI_NODE_ENV).filter(|v| !v.is_empty()) else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {OMNI_NODE_ENV} is not set (build the node with \
                 tests/chain/omni-node.sh; see the README, \"A real node\")"
            );
            return None;
        };
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/chain");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(&bin)
            .current_dir(dir)
            .args(["--chain", spec, "--dev-block-time", &block_ms.to_string()])
            .args(["--tmp", "--rpc-port", &port.to_string()])
            .args(["--listen-addr", "/ip4/127.0.0.1/tcp/0"])
            .args(["--no-prometheus", "--no-telemetry", "--no-mdns"])
            .args(["--no-hardware-benchmarks", "--rpc-max-connections", "1000"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{OMNI_NODE_ENV}={bin:?} does not start: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                // The first block sealed: the RPC server is up before it.
                let up = line.contains("Imported #1 ");
                seen.push(line);
                if up {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            panic!(
                "polkadot-omni-node did not seal its first block within 120 s; its log:\n{}",
                seen.join("\n")
            );
        }
        // Keep draining its log so it never blocks on a full pipe; with
        // NSN_OMNI_NODE_LOG set, pass it on.
        let echo = std::env::var_os("NSN_OMNI_NODE_LOG").is_some();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("omni-node: {line}");
                }
            }
        });
        Some(OmniNode {
            url: format!("ws://127.0.0.1:{port}"),
            block_ms,
            _child: child,
        })
    }
}
#[cfg(feature = "real-chain")]
#[allow(unused_imports)]
pub use omni_node_support::{OMNI_NODE_ENV, OmniNode, omni_node, omni_node_with};

/// Writes a key file the way an operator must: readable by its owner only
/// (`nsn-lane1 run` refuses one its group or others can read).
pub fn write_key_file(path: &std::path::Path, secret: &str) {
    std::fs::write(path, secret).expect("write key file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .expect("key file mode");
    }
}

/// Waits (at most `secs`) until task `id` is verified on `chain` at its
/// finalized head.
pub async fn until_verified(chain: &DevChain, id: TaskId, secs: u64) {
    use futures::StreamExt;
    use nsn_lane1::chain::ChainPort;
    let mut blocks = chain.finalized_blocks(None);
    within_secs(secs, async {
        loop {
            let head = chain.finalized_head().await.expect("finalized head");
            let task = chain.task(head.hash, id).await.expect("task read");
            if task.is_some_and(|t| t.status == nsn_lane1::task::TaskStatus::Verified) {
                return;
            }
            if !matches!(blocks.next().await, Some(Ok(_))) {
                panic!("the chain stopped");
            }
        }
    })
    .await;
}

/// What the round-trip benches measure against: a reference sidecar, one
/// input in its store, and a client on a one-worker runtime of its own (as
/// a node's).
pub struct Loopback {
    pub sidecar: TestSidecar,
    pub input: nsn_lane1::task::Cid,
    pub runtime: tokio::runtime::Runtime,
    pub client: nsn_lane1::sidecar::client::SidecarClient,
}

impl Loopback {
    pub fn start() -> Self {
        let sidecar = TestSidecar::start();
        let input = sidecar
            .sidecar
            .store()
            .put(b"x".to_vec())
            .expect("store input");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        let client = runtime.block_on(async { sidecar.client() });
        Loopback {
            sidecar,
            input,
            runtime,
            client,
        }
    }

    /// A zero-work `noop` run for task `id`.
    pub fn noop(&self, id: u64) -> nsn_lane1::sidecar::client::ExecuteRequest {
        nsn_lane1::sidecar::client::ExecuteRequest {
            task_id: TaskId(id),
            lane: Lane::Lane1,
            model: nsn_lane1::task::ModelId::new("noop").expect("model id"),
            input_cid: self.input.clone(),
            parameters: nsn_lane1::sidecar::client::Parameters::none(),
            timeout: None,
            attempt: 0,
        }
    }

    /// `n` noop round trips from task id `first`, `in_flight` at once; how
    /// long they took.
    pub fn round_trips(&self, first: u64, n: u64, in_flight: usize) -> std::time::Duration {
        use futures::StreamExt;
        self.runtime.block_on(async {
            let start = std::time::Instant::now();
            let mut calls = futures::stream::iter(first..first + n)
                .map(|id| self.client.execute().oneshot(self.noop(id)))
                .buffer_unordered(in_flight);
            while let Some(r) = calls.next().await {
                if let Err(e) = r {
                    panic!("execute failed during the bench: {e}");
                }
            }
            start.elapsed()
        })
    }
}

/// Alice creates a task for each call and has them assigned, every call
/// pooled before any is awaited (as a busy requester would): the tasks' ids.
pub async fn create_and_assign(chain: &DevChain, creates: Vec<MarketCall>) -> Vec<TaskId> {
    let alice = chain.submitter(nsn_lane1::task::AccountId::ALICE);
    let mut pooled = Vec::new();
    for call in creates {
        pooled.push(send(&alice, call).await);
    }
    let mut ids = Vec::new();
    for p in pooled {
        let inc = p.await.expect("created");
        ids.push(nsn_lane1::chain::created_task_id(&inc.events).expect("TaskCreated"));
    }
    let mut assigned = Vec::new();
    for id in &ids {
        assigned.push(send(&alice, MarketCall::AcceptAssignment { task_id: *id }).await);
    }
    for p in assigned {
        p.await.expect("assigned");
    }
    ids
}
