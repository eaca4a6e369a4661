// Over ~600 lines: the soak whole — its options, the fault schedule, the
// requester, the chain-connection and sidecar-process faults, and the final
// reading of the chain's record — kept together as the one place a reader
// learns what the soak proves.
//! A seeded soak: Lane 1 nodes on the embedded dev chain at a block time
//! with a finality lag, the reference sidecar as a separate process, a
//! requester posting a known mix of tasks, and a fault schedule that kills
//! the sidecar, kills nodes, cuts their chain connection, drops and delays
//! their transactions in the pool, and opens storms of Lane 0 work. At the
//! end it reads the chain's own record and prints what was lost, sent twice
//! or wrongly slashed; the exit status is non-zero if anything was.
//!
//! ```text
//! cargo run --release --example soak -- --tasks 1000 --seed 1
//! cargo run --release --example soak -- --tasks 200 --faults node,connection
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use nsn_lane1::chain::dev::{
    BlockMode, DEV_LANE0_MODEL, DevChain, DevConfig, DevGenesis, DevSubmitter, Origin, SlashCause,
};
use nsn_lane1::chain::{
    Block, BlockHash, BlockRef, BlockStream, ChainError, ChainPort, MarketCall, MarketEvent,
    Pooled, SubmitError, SubmitExt, TaskIntent, created_task_id,
};
use nsn_lane1::checkpoint::Checkpoint;
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::{ExecuteRequest, Parameters, SidecarClient, SidecarConfig};
use nsn_lane1::sidecar::server::Semantics;
use nsn_lane1::sidecar::set::SidecarSet;
use nsn_lane1::sidecar::store::BlobStore;
use nsn_lane1::task::{AccountId, FailReason, Lane, ModelId, Priority, TaskId, UNIT};
use tower::ServiceExt;

/// The soak's options.
#[derive(Parser, Debug, Clone)]
#[command(about = "Seeded soak of Lane 1 nodes under injected faults")]
struct Args {
    /// Lane 1 jobs to post (a job preempted by Lane 0 is posted again).
    #[arg(long, default_value_t = 1000)]
    tasks: u64,
    /// Seed of the job mix and the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to inject, comma-separated: sidecar, node, connection,
    /// pool-drop, pool-delay, lane0-storm, meddler, poison, nsn-sidecar,
    /// pending-cap, requester-fail, reorg, finality-stall; `all` or `none`.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Lane 1 nodes (Bob, Charlie, Ferdie).
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Sidecar processes behind every node (a `sidecar` fault kills one of
    /// them at a time).
    #[arg(long, default_value_t = 1)]
    sidecars: usize,
    /// Block time in ms.
    #[arg(long, default_value_t = 50)]
    block_ms: u64,
    /// Blocks finality trails the best block by.
    #[arg(long, default_value_t = 2)]
    finality_lag: u32,
    /// Mean time between faults, in ms.
    #[arg(long, default_value_t = 400)]
    fault_every_ms: u64,
    /// Jobs posted and not yet ended, at most.
    #[arg(long, default_value_t = 64)]
    backlog: usize,
    /// After the last job is posted, how long to wait for every job to end
    /// (seconds) before counting what is left as lost.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// The `nsn-lane1` binary to run the sidecar with (default: the one
    /// built beside this example, else this program in sidecar mode).
    #[arg(long)]
    sidecar_bin: Option<PathBuf>,
    /// Internal: serve the reference sidecar (the fallback sidecar process).
    #[arg(long, hide = true)]
    serve_sidecar: Option<std::net::SocketAddr>,
    /// Internal: the sidecar's store directory in sidecar mode.
    #[arg(long, hide = true)]
    store_dir: Option<PathBuf>,
    /// Internal: the sidecar's semantics in sidecar mode.
    #[arg(long, hide = true, default_value = "reference")]
    semantics: Semantics,
    /// Internal: the sidecar's set-up fault file in sidecar mode.
    #[arg(long, hide = true)]
    setup_fault_file: Option<PathBuf>,
}

const NODE_ACCOUNTS: [AccountId; 3] = [AccountId::BOB, AccountId::CHARLIE, AccountId::FERDIE];

// ---------------------------------------------------------------------------
// Randomness: splitmix64, so that a seed gives the same schedule everywhere.

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// The job mix.

/// What a job is, and so how it must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    /// A model that succeeds: must end verified.
    Good(&'static str),
    /// The `fail` model: the node's `fail_task(ExecutorFailed)` is deserved.
    Fails,
    /// Input the model refuses (not UTF-8 for `uppercase`): `InvalidInput`.
    BadInput,
    /// An input CID the sidecar does not have: `InvalidInput`.
    MissingInput,
}

/// The mix, in percent.
const MIX: &[(Kind, u64)] = &[
    (Kind::Good("sha256"), 30),
    (Kind::Good("uppercase"), 18),
    (Kind::Good("noop"), 10),
    (Kind::Good("sleep"), 22),
    (Kind::Fails, 8),
    (Kind::BadInput, 6),
    (Kind::MissingInput, 6),
];

impl Kind {
    fn draw(rng: &mut Rng) -> Kind {
        let mut x = rng.range(0, 99);
        for (kind, pct) in MIX {
            if x < *pct {
                return *kind;
            }
            x -= pct;
        }
        Kind::Good("sha256")
    }
    fn model(self) -> &'static str {
        match self {
            Kind::Good(m) => m,
            Kind::Fails => "fail",
            Kind::BadInput => "uppercase",
            Kind::MissingInput => "sha256",
        }
    }
    fn name(self) -> String {
        match self {
            Kind::Good(m) => m.to_owned(),
            Kind::Fails => "fail".into(),
            Kind::BadInput => "invalid input".into(),
            Kind::MissingInput => "missing input".into(),
        }
    }
    /// The end this job must reach. Against NSN's sidecar nothing says
    /// that the model failed or that an input is bad (its words are the
    /// plugin's stderr): those jobs are held and given back at their
    /// (short) deadline, or expire unassigned.
    fn expected(self, nsn: bool) -> &'static [End] {
        match (self, nsn) {
            (Kind::Good(_), _) => &[End::Verified],
            (Kind::Fails, false) => &[End::Failed(FailReason::ExecutorFailed)],
            (Kind::BadInput | Kind::MissingInput, false) => {
                &[End::Failed(FailReason::InvalidInput)]
            }
            (_, true) => &[End::Failed(FailReason::DeadlineExceeded), End::Expired],
        }
    }

    /// Blocks until its deadline: short for the jobs that end there.
    fn deadline(self, nsn: bool) -> u32 {
        match (self, nsn) {
            (Kind::Good(_), _) | (_, false) => 20_000,
            (_, true) => NSN_FAILING_DEADLINE,
        }
    }
}

/// The deadline, in blocks, of the jobs that fail against NSN's sidecar.
const NSN_FAILING_DEADLINE: u32 = 120;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Verified,
    Rejected,
    Failed(FailReason),
    Expired,
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    /// The sidecar process killed (SIGKILL) and started again on its port.
    Sidecar,
    /// A node torn down without a graceful stop, started again from its
    /// checkpoint.
    Node,
    /// A node's chain connection cut: its block streams fail, reads fail,
    /// answers to its pooled calls are lost.
    Connection,
    /// A node's transaction dropped from the pool (with its later ones).
    PoolDrop,
    /// A node's transaction held back for some blocks (its later ones wait
    /// behind it, as for one delivered out of order).
    PoolDelay,
    /// Many Lane 0 tasks at once.
    Lane0Storm,
    /// A third party on the sidecar's port cancels our runs.
    Meddler,
    /// A third party runs our next task ids first, with inputs of its own.
    Poison,
    /// The sidecar behaves as NSN's deployed one (single-use run ids, a
    /// cancel that only marks, NSN's words, no verdict), and now and then
    /// fails runs for the operator's set-up (runner not configured, VRAM,
    /// sandbox policy, an unhealthy container).
    NsnSidecar,
    /// The chain-wide list of results waiting for verification is full
    /// for a while: every `submit_result` is refused with
    /// `TooManyPendingVerifications`.
    PendingCap,
    /// The requester fails one of its tasks a node holds (assigned or
    /// running) itself (the pallet slashes the executor for it: not the
    /// node's doing).
    RequesterFail,
    /// One to three best blocks retracted while calls of ours are in them;
    /// the new branch has those calls again (the pool resubmits them) or,
    /// half the time, lacks them.
    Reorg,
    /// Finality stops for 10 to 80 blocks while best blocks go on.
    FinalityStall,
}

const ALL_FAULTS: [Fault; 13] = [
    Fault::Sidecar,
    Fault::Node,
    Fault::Connection,
    Fault::PoolDrop,
    Fault::PoolDelay,
    Fault::Lane0Storm,
    Fault::Meddler,
    Fault::Poison,
    Fault::NsnSidecar,
    Fault::PendingCap,
    Fault::RequesterFail,
    Fault::Reorg,
    Fault::FinalityStall,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Sidecar => "sidecar",
            Fault::Node => "node",
            Fault::Connection => "connection",
            Fault::PoolDrop => "pool-drop",
            Fault::PoolDelay => "pool-delay",
            Fault::Lane0Storm => "lane0-storm",
            Fault::Meddler => "meddler",
            Fault::Poison => "poison",
            Fault::NsnSidecar => "nsn-sidecar",
            Fault::PendingCap => "pending-cap",
            Fault::RequesterFail => "requester-fail",
            Fault::Reorg => "reorg",
            Fault::FinalityStall => "finality-stall",
        }
    }

    fn parse_list(list: &str) -> Result<Vec<Fault>, String> {
        match list.trim() {
            "all" => return Ok(ALL_FAULTS.to_vec()),
            "none" | "" => return Ok(Vec::new()),
            _ => {}
        }
        list.split(',')
            .map(|s| {
                ALL_FAULTS
                    .into_iter()
                    .find(|f| f.name() == s.trim())
                    .ok_or_else(|| format!("no such fault: {s:?}"))
            })
            .collect()
    }
}

/// A switch that cuts a node's chain connection.
#[derive(Clone)]
struct Cut(watch::Sender<bool>);

impl Cut {
    fn new() -> Self {
        Cut(watch::channel(false).0)
    }
    fn is_cut(&self) -> bool {
        *self.0.borrow()
    }
    fn set(&self, cut: bool) {
        self.0.send_replace(cut);
    }
    /// Resolves when the connection is cut.
    async fn cut(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

fn lost() -> ChainError {
    ChainError::Connection("connection cut by the soak".into())
}

/// The dev chain as a node reaches it, through a connection that can be cut.
#[derive(Clone)]
struct CutPort {
    chain: DevChain,
    cut: Cut,
}

impl CutPort {
    fn stream(&self, inner: BlockStream) -> BlockStream {
        if self.cut.is_cut() {
            return Box::pin(futures::stream::once(async { Err(lost()) }));
        }
        let cut = self.cut.clone();
        Box::pin(futures::stream::unfold(
            Some((inner, cut)),
            |state| async move {
                let (mut inner, cut) = state?;
                tokio::select! {
                    biased;
                    () = cut.cut() => Some((Err(lost()), None)),
                    item = inner.next() => item.map(|i: Result<Block, ChainError>| (i, Some((inner, cut)))),
                }
            },
        ))
    }

    fn check(&self) -> Result<(), ChainError> {
        if self.cut.is_cut() {
            Err(lost())
        } else {
            Ok(())
        }
    }
}

impl ChainPort for CutPort {
    fn finalized_blocks(&self, from: Option<u32>) -> BlockStream {
        self.stream(self.chain.finalized_blocks(from))
    }
    fn best_blocks(&self, from: Option<u32>) -> BlockStream {
        self.stream(self.chain.best_blocks(from))
    }
    async fn best_head(&self) -> Result<BlockRef, ChainError> {
        self.check()?;
        self.chain.best_head().await
    }
    async fn finalized_head(&self) -> Result<BlockRef, ChainError> {
        self.check()?;
        self.chain.finalized_head().await
    }
    async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        self.check()?;
        self.chain.task(at, id).await
    }
    async fn assigned_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.check()?;
        self.chain.assigned_lane1_tasks(at).await
    }
    async fn open_lane0_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.check()?;
        self.chain.open_lane0_tasks(at).await
    }
    async fn open_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.check()?;
        self.chain.open_lane1_tasks(at).await
    }
    async fn account_nonce_at(&self, at: BlockHash, who: AccountId) -> Result<u64, ChainError> {
        self.check()?;
        self.chain.account_nonce_at(at, who).await
    }
    async fn account_nonce(&self, who: AccountId) -> Result<u64, ChainError> {
        self.check()?;
        self.chain.account_nonce(who).await
    }
}

/// A node's submitter through the same connection: refused while cut, and
/// the answer to a pooled call lost if the cut comes first (the call itself
/// may still land).
#[derive(Clone)]
struct CutSubmit {
    inner: DevSubmitter,
    cut: Cut,
}

impl tower::Service<MarketCall> for CutSubmit {
    type Response = Pooled;
    type Error = SubmitError;
    type Future = std::future::Ready<Result<Pooled, SubmitError>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), SubmitError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        if self.cut.is_cut() {
            return std::future::ready(Err(SubmitError::Connection(
                "connection cut by the soak".into(),
            )));
        }
        let cut = self.cut.clone();
        let answer = match tower::Service::call(&mut self.inner, call).into_inner() {
            Ok(p) => p,
            Err(e) => return std::future::ready(Err(e)),
        };
        let nonce = answer.nonce();
        std::future::ready(Ok(Pooled::new(nonce, async move {
            tokio::select! {
                biased;
                outcome = answer.into_future() => outcome,
                () = cut.cut() => Err(SubmitError::Connection("connection cut; answer lost".into())),
            }
        })))
    }
}

// ---------------------------------------------------------------------------
// The sidecar process.

struct SidecarProcess {
    command: (PathBuf, Vec<String>),
    addr: std::net::SocketAddr,
    child: Option<tokio::process::Child>,
}

impl SidecarProcess {
    fn new(
        args: &Args,
        addr: std::net::SocketAddr,
        store: &std::path::Path,
        nsn: Option<&std::path::Path>,
    ) -> Self {
        let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("soak"));
        let beside = me
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("nsn-lane1"));
        let bin = args
            .sidecar_bin
            .clone()
            .or_else(|| beside.filter(|b| b.is_file()));
        let store = store.display().to_string();
        let mut nsn_args: Vec<String> = Vec::new();
        if let Some(file) = nsn {
            nsn_args = vec![
                "--semantics".into(),
                "nsn".into(),
                "--setup-fault-file".into(),
                file.display().to_string(),
            ];
        }
        let mut command = match bin {
            Some(bin) => (
                bin,
                vec![
                    "sidecar".into(),
                    "--listen".into(),
                    addr.to_string(),
                    "--store-dir".into(),
                    store,
                ],
            ),
            None => (
                me,
                vec![
                    "--serve-sidecar".into(),
                    addr.to_string(),
                    "--store-dir".into(),
                    store,
                ],
            ),
        };
        command.1.extend(nsn_args);
        SidecarProcess {
            command,
            addr,
            child: None,
        }
    }

    async fn start(&mut self) -> Result<(), String> {
        let (bin, args) = &self.command;
        let child = tokio::process::Command::new(bin)
            .args(args)
            .env("NSN_LANE1_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the sidecar {}: {e}", bin.display()))?;
        self.child = Some(child);
        // Listening once it takes a connection (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the sidecar did not listen on {}", self.addr));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: no shutdown, runs end mid-flight.
            let _ = child.kill().await;
        }
    }
}

/// Sidecar mode: what `nsn-lane1 sidecar --store-dir` does.
async fn serve_sidecar(
    addr: std::net::SocketAddr,
    dir: PathBuf,
    semantics: Semantics,
    setup_fault_file: Option<PathBuf>,
) -> ExitCode {
    let store = match BlobStore::with_dir(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidecar store: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sidecar listen {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let sidecar = nsn_lane1::sidecar::server::ReferenceSidecar::new(store);
    sidecar.set_semantics(semantics);
    sidecar.set_setup_fault_file(setup_fault_file);
    let served = sidecar.serve(listener, std::future::pending()).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidecar: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Nodes.

struct SoakNode {
    account: AccountId,
    /// Where each node's nonce record is found (its Lane 0 side signs
    /// with its key, as part of it).
    signers: nsn_lane1::signer::Signers,
    cut: Cut,
    checkpoint: Checkpoint,
    node: Option<Node>,
}

fn executor_config(block: Duration) -> ExecutorConfig {
    let mut config = ExecutorConfig::default();
    config.admission.block_time = block;
    // The mix fails 8 % of its jobs with the `fail` model on purpose, a
    // slashing verdict each: the stake breaker (tested on its own) would
    // hold them all. Here it bounds nothing.
    config.breaker = nsn_lane1::breaker::BreakerPolicy {
        consecutive: 0,
        hourly_limit: u128::MAX,
        ..Default::default()
    };
    config.model_parameters.insert(
        ModelId::new("sleep").expect("a model id"),
        Parameters::json(&serde_json::json!({ "duration_ms": 20 })),
    );
    config
}

impl SoakNode {
    fn spawn(&mut self, chain: &DevChain, sidecar: &SidecarSet, block: Duration) {
        let node = Node::spawn(
            executor_config(block),
            NodeParts::new(
                CutPort {
                    chain: chain.clone(),
                    cut: self.cut.clone(),
                },
                CutSubmit {
                    inner: chain.submitter(self.account),
                    cut: self.cut.clone(),
                },
                self.account,
                sidecar.clone(),
            )
            .checkpoint(self.checkpoint.clone()),
        );
        self.signers.set(self.account, node.nonces.clone());
        self.node = Some(node);
    }
}

// ---------------------------------------------------------------------------
// The requester.

#[derive(Clone)]
struct Job {
    kind: Kind,
    input: Vec<u8>,
    /// Blocks until its deadline.
    deadline: u32,
}

/// What the requester knows of the jobs.
#[derive(Default)]
struct Ledger {
    /// Lane 1 task → its job's index.
    task_job: HashMap<TaskId, usize>,
    jobs: Vec<Job>,
    /// Each job's end, once it has one.
    ends: Vec<Option<(End, TaskId)>>,
    created_at: HashMap<TaskId, Instant>,
    latencies: Vec<Duration>,
    reposted: u64,
}

impl Ledger {
    fn ended(&self) -> usize {
        self.ends.iter().filter(|e| e.is_some()).count()
    }
}

enum Step {
    Posted { job: usize, id: TaskId },
    Assigned { refused: Vec<TaskId> },
    Lane0Done,
}

type StepFuture = futures::future::BoxFuture<'static, Result<Step, String>>;

async fn post(alice: DevSubmitter, job: usize, j: Job) -> Result<Step, String> {
    let inc = alice
        .submit(MarketCall::CreateTaskIntent {
            lane: Lane::Lane1,
            priority: Priority::Normal,
            model_requirements: j.kind.model().as_bytes().to_vec(),
            input_cid: j.input,
            compute_budget: 1_000,
            deadline_blocks: j.deadline,
            escrow_amount: UNIT / 10,
        })
        .await
        .map_err(|e| format!("create: {e}"))?;
    let id = created_task_id(&inc.events).ok_or("no TaskCreated")?;
    Ok(Step::Posted { job, id })
}

async fn assign(alice: DevSubmitter, ids: Vec<TaskId>) -> Result<Step, String> {
    let calls = ids.into_iter().map(|id| {
        let alice = alice.clone();
        async move {
            (
                id,
                alice
                    .submit(MarketCall::AcceptAssignment { task_id: id })
                    .await,
            )
        }
    });
    let mut refused = Vec::new();
    for (id, result) in futures::future::join_all(calls).await {
        match result {
            Ok(_) => {}
            Err(e) if e.market_error() == Some(nsn_lane1::chain::MarketError::Lane0Priority) => {
                refused.push(id)
            }
            Err(e) => return Err(format!("assign {id}: {e}")),
        }
    }
    Ok(Step::Assigned { refused })
}

/// A Lane 0 task, created and served by the Lane 0 side of the node the
/// chain assigns it to (outside the Lane 1 node, as in a full node).
async fn lane0(
    chain: DevChain,
    input: Vec<u8>,
    signers: nsn_lane1::signer::Signers,
) -> Result<Step, String> {
    let alice = chain.submitter(AccountId::ALICE);
    let inc = alice
        .clone()
        .submit(MarketCall::CreateTaskIntent {
            lane: Lane::Lane0,
            priority: Priority::High,
            model_requirements: DEV_LANE0_MODEL.as_bytes().to_vec(),
            input_cid: input,
            compute_budget: 1,
            deadline_blocks: 1_000,
            escrow_amount: UNIT / 10,
        })
        .await
        .map_err(|e| format!("lane 0 create: {e}"))?;
    let id = created_task_id(&inc.events).ok_or("no TaskCreated")?;
    nsn_lane1::dev::lane0_side(chain, id, &signers)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Step::Lane0Done)
}

fn end_of(event: &MarketEvent) -> Option<(TaskId, End)> {
    Some(match *event {
        MarketEvent::TaskVerified { task_id, .. } => (task_id, End::Verified),
        MarketEvent::TaskRejected { task_id, .. } => (task_id, End::Rejected),
        MarketEvent::TaskFailed { task_id, reason } => (task_id, End::Failed(reason)),
        MarketEvent::TaskExpired { task_id } => (task_id, End::Expired),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// The run.

/// Looks (5 ms apart) for a pooled call of ours to drop or delay.
const POOL_FAULT_LOOKS: u32 = 400;

/// Injects faults on a seeded schedule until stopped; owns what it breaks.
struct Faulter {
    faults: Vec<Fault>,
    /// The faults still to inject in this round.
    deck: Vec<Fault>,
    /// Names the set-up fault the NSN-like sidecar shows while it exists.
    setup_fault_file: PathBuf,
    /// Another party's client on the sidecar's port.
    meddler: SidecarClient,
    /// The sidecar's store (for the poisoner's inputs).
    store: BlobStore,
    /// Tasks the requester failed itself (their end is the requester's).
    requester_failed: Arc<std::sync::Mutex<HashSet<TaskId>>>,
    chain: DevChain,
    sidecars: Vec<SidecarProcess>,
    client: SidecarSet,
    nodes: Vec<SoakNode>,
    rng: Rng,
    every: Duration,
    block: Duration,
    /// The requester's Lane 1 tasks (the calls pool faults pick from).
    lane1: Arc<std::sync::Mutex<HashSet<TaskId>>>,
    injected: BTreeMap<Fault, u64>,
    lane0: tokio::task::JoinSet<Result<Step, String>>,
    lane0_posted: u64,
    /// Nodes found dead (not killed by a fault), with the cause.
    deaths: Vec<String>,
}

impl Faulter {
    async fn run(mut self, stop: tokio_util::sync::CancellationToken) -> Result<Self, String> {
        if self.faults.is_empty() {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(self),
                    () = tokio::time::sleep(self.every) => self.restart_dead(),
                }
            }
        }
        loop {
            let mean = self.every.as_millis() as u64;
            let gap = Duration::from_millis(self.rng.range(mean / 2, mean * 3 / 2));
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(gap) => {}
            }
            self.restart_dead();
            let Some(fault) = self.next_fault() else {
                break;
            };
            if self.inject(fault).await? {
                *self.injected.entry(fault).or_default() += 1;
            } else {
                // Nothing to inject it into now: again later in the round.
                self.deck.insert(0, fault);
            }
            while let Some(done) = self.lane0.try_join_next() {
                done.map_err(|e| e.to_string())??;
            }
        }
        // Lane 0 work posted is served before the count is read.
        let served = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(done) = self.lane0.join_next().await {
                done.map_err(|e| e.to_string())??;
            }
            Ok::<_, String>(())
        });
        served
            .await
            .map_err(|_| "lane 0 work not served in 120 s".to_owned())??;
        Ok(self)
    }

    fn node_accounts(&self) -> HashSet<AccountId> {
        self.nodes.iter().map(|n| n.account).collect()
    }

    /// Restarts a node that died on its own (as a supervisor would), and
    /// records why it died.
    fn restart_dead(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(cause) = self.nodes[i]
                .node
                .as_ref()
                .and_then(|n| n.liveness().check().err())
            else {
                continue;
            };
            let account = self.nodes[i].account;
            eprintln!("node {account} died: {cause}");
            self.deaths.push(format!("node {account} died: {cause}"));
            self.nodes[i].node = None;
            self.nodes[i].spawn(&self.chain, &self.client, self.block);
        }
    }

    /// The next fault: every kind once, in a seeded order, then again (so
    /// that a short run meets each kind, which a pick at random need not).
    fn next_fault(&mut self) -> Option<Fault> {
        if self.deck.is_empty() {
            self.deck = self.faults.clone();
            // Fisher-Yates with the seeded generator.
            for i in (1..self.deck.len()).rev() {
                let j = self.rng.range(0, i as u64) as usize;
                self.deck.swap(i, j);
            }
        }
        self.deck.pop()
    }

    /// Injects `fault`; `false` if there was nothing to inject it into.
    async fn inject(&mut self, fault: Fault) -> Result<bool, String> {
        let accounts = self.node_accounts();
        let lane1 = self.lane1.clone();
        // Lane 1 calls of our nodes (not the Lane 0 side's, the requester's
        // or the validators').
        let ours = move |origin: &Origin, call: &MarketCall| {
            matches!(origin, Origin::Signed(a) if accounts.contains(a))
                && call
                    .task_id()
                    .is_some_and(|t| lane1.lock().unwrap_or_else(|e| e.into_inner()).contains(&t))
        };
        match fault {
            Fault::Sidecar => {
                let i = self.rng.range(0, self.sidecars.len() as u64 - 1) as usize;
                self.sidecars[i].kill().await;
                let pause = self.rng.range(50, 800);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                self.sidecars[i].start().await?;
            }
            Fault::Node => {
                let i = self.rng.range(0, self.nodes.len() as u64 - 1) as usize;
                let Some(node) = self.nodes[i].node.take() else {
                    return Ok(false);
                };
                node.kill().await;
                let pause = self.rng.range(20, 500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                self.nodes[i].spawn(&self.chain, &self.client, self.block);
            }
            Fault::Connection => {
                let i = self.rng.range(0, self.nodes.len() as u64 - 1) as usize;
                let pause = self.rng.range(100, 1500);
                let cut = self.nodes[i].cut.clone();
                cut.set(true);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                cut.set(false);
            }
            Fault::PoolDrop | Fault::PoolDelay => {
                // The pool is empty between blocks more often than not: look
                // again for a while for a call of ours to drop or delay.
                let pick = self.rng.next() as usize;
                let blocks = self.rng.range(2, 12) as u32;
                for _ in 0..POOL_FAULT_LOOKS {
                    let hit = if fault == Fault::PoolDrop {
                        !self.chain.drop_pooled(pick, &ours).is_empty()
                    } else {
                        self.chain.hold_pooled(pick, blocks, &ours).is_some()
                    };
                    if hit {
                        return Ok(true);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                return Ok(false);
            }
            Fault::Meddler => {
                // Cancels a run of ours: run ids are public (the chain task
                // id, then attempts after a dash).
                for _ in 0..POOL_FAULT_LOOKS {
                    let running: Vec<TaskId> = self.chain.with_market(|m| {
                        let ours = self.lane1.lock().unwrap_or_else(|e| e.into_inner());
                        ours.iter()
                            .copied()
                            .filter(|id| {
                                m.task(*id).is_some_and(|t| {
                                    matches!(
                                        t.status,
                                        nsn_lane1::task::TaskStatus::Assigned
                                            | nsn_lane1::task::TaskStatus::Executing
                                    )
                                })
                            })
                            .collect()
                    });
                    for task in running {
                        let mut run = nsn_lane1::task::RunId::first(task);
                        for _ in 0..3 {
                            if let Ok(c) = self.meddler.cancel(run, "meddling").await
                                && c.was_running
                            {
                                return Ok(true);
                            }
                            run = run.next();
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                return Ok(false);
            }
            Fault::Poison => {
                // Runs the next task ids first, on inputs of its own.
                let next = self.chain.with_market(|m| m.next_task_id());
                let mut hit = false;
                for k in 0..2 {
                    let input = self
                        .store
                        .put(format!("poison {next} {k}").into_bytes())
                        .map_err(|e| e.to_string())?;
                    let request = ExecuteRequest {
                        task_id: TaskId(next + k),
                        lane: Lane::Lane1,
                        model: ModelId::new("noop").map_err(|e| e.to_string())?,
                        input_cid: input,
                        parameters: Parameters::none(),
                        timeout: Some(Duration::from_secs(5)),
                        attempt: 0,
                    };
                    hit |= self.meddler.execute().oneshot(request).await.is_ok();
                }
                return Ok(hit);
            }
            Fault::NsnSidecar => {
                let fault = self.rng.pick(&[
                    "runner-not-configured",
                    "sandbox-required",
                    "insufficient-vram",
                    "container-unhealthy",
                ]);
                std::fs::write(&self.setup_fault_file, fault).map_err(|e| e.to_string())?;
                let pause = self.rng.range(100, 800);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                std::fs::remove_file(&self.setup_fault_file).map_err(|e| e.to_string())?;
            }
            Fault::PendingCap => {
                let blocks = self.rng.range(5, 30) as u32;
                self.chain.set_max_pending_verifications(0);
                tokio::time::sleep(self.block * blocks).await;
                self.chain.set_max_pending_verifications(1000);
            }
            Fault::RequesterFail => {
                // A task of its own that a node holds now (assigned or
                // running).
                for _ in 0..POOL_FAULT_LOOKS {
                    let running: Option<TaskId> = self.chain.with_market(|m| {
                        let ours = self.lane1.lock().unwrap_or_else(|e| e.into_inner());
                        ours.iter().copied().find(|id| {
                            m.task(*id).is_some_and(|t| {
                                matches!(
                                    t.status,
                                    nsn_lane1::task::TaskStatus::Assigned
                                        | nsn_lane1::task::TaskStatus::Executing
                                )
                            })
                        })
                    });
                    if let Some(task_id) = running {
                        self.requester_failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(task_id);
                        let failed = self
                            .chain
                            .submitter(AccountId::ALICE)
                            .submit(MarketCall::FailTask {
                                task_id,
                                reason: FailReason::ExecutorFailed,
                            })
                            .await;
                        return Ok(failed.is_ok());
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                return Ok(false);
            }
            Fault::Reorg => {
                let depth = self.rng.range(1, 3) as u32;
                let discard = self.rng.next().is_multiple_of(2);
                for _ in 0..POOL_FAULT_LOOKS {
                    // While a call of ours is in the blocks it retracts
                    // (never a final one).
                    let head = self.chain.head_number();
                    let first = (head + 1)
                        .saturating_sub(depth)
                        .max(self.chain.finalized_number() + 1);
                    let holds = self
                        .chain
                        .extrinsics_since(first)
                        .iter()
                        .any(|x| ours(&x.origin, &x.call));
                    if holds
                        && self
                            .chain
                            .fork_from(first, |o, c| !(discard && ours(o, c)))
                            .is_ok()
                    {
                        return Ok(true);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                return Ok(false);
            }
            Fault::FinalityStall => {
                let blocks = self.rng.range(10, 80) as u32;
                self.chain.stall_finality(true);
                tokio::time::sleep(self.block * blocks).await;
                self.chain.stall_finality(false);
            }
            Fault::Lane0Storm => {
                let count = self.rng.range(4, 12);
                for _ in 0..count {
                    self.lane0_posted += 1;
                    let input =
                        BlobStore::cid_of(format!("lane 0 {}", self.lane0_posted).as_bytes());
                    self.lane0.spawn(lane0(
                        self.chain.clone(),
                        input.as_bytes().to_vec(),
                        self.nodes[0].signers.clone(),
                    ));
                }
            }
        }
        Ok(true)
    }
}

/// The requester's side of the run.
struct Soak {
    args: Args,
    /// The sidecar behaves as NSN's.
    nsn: bool,
    /// Tasks the requester failed itself: whatever their end, it is the
    /// requester's doing (or, if its call came too late, the node's).
    requester_failed: Arc<std::sync::Mutex<HashSet<TaskId>>>,
    chain: DevChain,
    store: BlobStore,
    rng: Rng,
    ledger: Ledger,
    lane1: Arc<std::sync::Mutex<HashSet<TaskId>>>,
}

impl Soak {
    /// A job's input: stored for the sidecar, except for `MissingInput`.
    fn input_for(&mut self, i: usize, kind: Kind) -> Result<Vec<u8>, String> {
        let bytes = match kind {
            Kind::BadInput => vec![0xff, 0xfe, (i % 251) as u8],
            _ => format!("soak {} job {i}", self.args.seed).into_bytes(),
        };
        if kind == Kind::MissingInput {
            return Ok(BlobStore::cid_of(&bytes).as_bytes().to_vec());
        }
        let cid = self.store.put(bytes).map_err(|e| e.to_string())?;
        Ok(cid.as_bytes().to_vec())
    }

    /// Posts every job and follows the chain until each has ended, or the
    /// settling time after the last post is out. `all_posted` is told when
    /// the last job is posted (the faults stop then).
    async fn run(&mut self, all_posted: tokio_util::sync::CancellationToken) -> Result<(), String> {
        let alice = self.chain.submitter(AccountId::ALICE);
        let mut blocks = self
            .chain
            .finalized_blocks(Some(self.chain.head_number() + 1));
        let mut steps = futures::stream::FuturesUnordered::<StepFuture>::new();
        let mut unassigned: Vec<TaskId> = Vec::new();
        let mut assigning = false;
        let mut posted = 0usize;
        let n = self.args.tasks as usize;
        let mut settle_by: Option<Instant> = None;
        loop {
            let open = posted - self.ledger.ended();
            if posted < n && open < self.args.backlog {
                let kind = Kind::draw(&mut self.rng);
                let input = self.input_for(posted, kind)?;
                let deadline = kind.deadline(self.nsn);
                let job = Job {
                    kind,
                    input,
                    deadline,
                };
                self.ledger.jobs.push(job.clone());
                self.ledger.ends.push(None);
                steps.push(Box::pin(post(alice.clone(), posted, job)));
                posted += 1;
                continue;
            }
            if posted == n && settle_by.is_none() {
                all_posted.cancel();
                settle_by = Some(Instant::now() + Duration::from_secs(self.args.settle_secs));
            }
            if posted == n && self.ledger.ended() == n {
                return Ok(());
            }
            if !assigning && !unassigned.is_empty() && !self.lane0_open().await? {
                assigning = true;
                steps.push(Box::pin(assign(
                    alice.clone(),
                    std::mem::take(&mut unassigned),
                )));
            }
            let settle = settle_by.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep_until(settle) => return Ok(()),
                Some(step) = steps.next(), if !steps.is_empty() => match step? {
                    Step::Posted { job, id } => {
                        self.ledger.task_job.insert(id, job);
                        self.lane1.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
                        self.ledger.created_at.insert(id, Instant::now());
                        unassigned.push(id);
                    }
                    Step::Assigned { refused } => {
                        assigning = false;
                        unassigned.extend(refused);
                    }
                    Step::Lane0Done => {}
                },
                block = blocks.next() => {
                    let Some(Ok(block)) = block else {
                        return Err("the dev chain stopped".into());
                    };
                    for r in block.events.iter() {
                        let Some((task_id, end)) = end_of(&r.event) else { continue };
                        let Some(&job) = self.ledger.task_job.get(&task_id) else { continue };
                        if end == End::Failed(FailReason::Preempted) {
                            // Made way for Lane 0 by the chain's hook: the
                            // requester posts the job again, as a new task.
                            self.ledger.reposted += 1;
                            let j = self.ledger.jobs[job].clone();
                            steps.push(Box::pin(post(alice.clone(), job, j)));
                            continue;
                        }
                        if end == End::Verified
                            && let Some(at) = self.ledger.created_at.get(&task_id)
                        {
                            self.ledger.latencies.push(at.elapsed());
                        }
                        self.ledger.ends[job] = Some((end, task_id));
                    }
                }
            }
        }
    }

    async fn lane0_open(&self) -> Result<bool, String> {
        let best = self.chain.best_head().await.map_err(|e| e.to_string())?;
        Ok(!self
            .chain
            .open_lane0_tasks(best.hash)
            .await
            .map_err(|e| e.to_string())?
            .is_empty())
    }
}

// ---------------------------------------------------------------------------
// The chain's record, read at the end.

#[derive(Default)]
struct Record {
    jobs: u64,
    tasks: u64,
    ends: BTreeMap<String, u64>,
    unexpected: Vec<String>,
    not_ended: u64,
    still: BTreeMap<String, u64>,
    stuck: Vec<String>,
    max_calls: BTreeMap<&'static str, usize>,
    doubled: Vec<String>,
    deserved: u64,
    wrongful: Vec<String>,
    hook_slashes: BTreeMap<String, u64>,
    mix: BTreeMap<String, u64>,
    /// Jobs the requester failed itself.
    requester_failed: u64,
}

fn read_record(soak: &Soak, accounts: &HashSet<AccountId>) -> Record {
    let mut r = Record {
        jobs: soak.ledger.jobs.len() as u64,
        tasks: soak.ledger.task_job.len() as u64,
        ..Record::default()
    };
    for job in &soak.ledger.jobs {
        *r.mix.entry(job.kind.name()).or_default() += 1;
    }
    for (i, (job, end)) in soak.ledger.jobs.iter().zip(&soak.ledger.ends).enumerate() {
        match end {
            None => r.not_ended += 1,
            Some((end, task)) => {
                *r.ends.entry(format!("{end:?}")).or_default() += 1;
                let by_requester = soak
                    .requester_failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(task);
                if by_requester {
                    r.requester_failed += 1;
                } else if !job.kind.expected(soak.nsn).contains(end) {
                    r.unexpected.push(format!(
                        "job {i} ({}) task {task}: {end:?}, expected {:?}",
                        job.kind.name(),
                        job.kind.expected(soak.nsn)
                    ));
                }
            }
        }
    }
    // What is still in progress on chain (must be nothing).
    soak.chain.with_market(|m| {
        for id in soak.ledger.task_job.keys() {
            if let Some(t) = m.task(*id)
                && !t.status.is_terminal()
            {
                *r.still.entry(format!("{:?}", t.status)).or_default() += 1;
                r.stuck.push(format!(
                    "task {id} ({}) is {:?} with {:?}",
                    soak.ledger.jobs[soak.ledger.task_job[id]].kind.name(),
                    t.status,
                    t.executor
                ));
            }
        }
    });
    // Calls per (task, account, call), from the chain's extrinsics; a call
    // sent again after an earlier copy took effect is a call sent twice.
    let mut seen: HashMap<(TaskId, AccountId, &'static str), (usize, bool)> = HashMap::new();
    for x in soak.chain.extrinsics() {
        let Origin::Signed(who) = x.origin else {
            continue;
        };
        let Some(task) = x.call.task_id() else {
            continue;
        };
        if !accounts.contains(&who) || !soak.ledger.task_job.contains_key(&task) {
            continue;
        }
        let name = x.call.name();
        if !matches!(name, "start_task" | "submit_result" | "fail_task") {
            continue;
        }
        let entry = seen.entry((task, who, name)).or_default();
        entry.0 += 1;
        if entry.1 {
            r.doubled.push(format!(
                "{name} for task {task} by {who} in block {}",
                x.block
            ));
        }
        if x.result.is_ok() {
            entry.1 = true;
            if let MarketCall::FailTask { reason, .. } = x.call
                && reason.slashes_executor()
            {
                let job = soak.ledger.task_job[&task];
                // Deserved only on the sidecar's positive verdict: the
                // reference sidecar gives it for the `fail` model; NSN's
                // sidecar never does.
                if !soak.nsn
                    && soak.ledger.jobs[job].kind == Kind::Fails
                    && reason == FailReason::ExecutorFailed
                {
                    r.deserved += 1;
                } else {
                    r.wrongful
                        .push(format!("fail_task({reason:?}) for task {task} by {who}"));
                }
            }
        }
        let max = r.max_calls.entry(name).or_default();
        *max = (*max).max(entry.0);
    }
    // Slashes by the pallet's own rules, and a cross-check of ours.
    soak.chain.with_market(|m| {
        let mut own_total = 0u64;
        for a in accounts {
            own_total += u64::from(m.slashes_by_own_calls(a));
            for (cause, count) in m.slashes(a) {
                // The node's own calls are checked against the extrinsics
                // below; the rest are the pallet's rules and the
                // requester's own calls, shown apart.
                if cause != SlashCause::ExecutorFailTask {
                    *r.hook_slashes.entry(format!("{cause:?}")).or_default() += u64::from(count);
                }
            }
        }
        if own_total != r.deserved + r.wrongful.len() as u64 {
            r.wrongful.push(format!(
                "the chain counts {own_total} slashes by our calls; the extrinsics explain {}",
                r.deserved + r.wrongful.len() as u64
            ));
        }
    });
    r
}

fn percentile(v: &mut [Duration], p: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort();
    let d = v[((v.len() - 1) as f64 * p).round() as usize];
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn print_table(soak: &mut Soak, faulter: &Faulter, r: &Record, elapsed: Duration) {
    let mut rows: Vec<(String, String)> = vec![
        ("seed".into(), soak.args.seed.to_string()),
        (
            "sidecar semantics".into(),
            if soak.nsn { "nsn" } else { "reference" }.into(),
        ),
        ("sidecars".into(), soak.args.sidecars.to_string()),
        ("jobs posted".into(), r.jobs.to_string()),
        ("lane 1 tasks created".into(), r.tasks.to_string()),
        (
            "  re-posted after preemption".into(),
            soak.ledger.reposted.to_string(),
        ),
        (
            "lane 0 tasks posted".into(),
            faulter.lane0_posted.to_string(),
        ),
    ];
    for (kind, count) in &r.mix {
        rows.push((format!("  mix: {kind}"), count.to_string()));
    }
    for (end, count) in &r.ends {
        rows.push((format!("ended {end}"), count.to_string()));
    }
    rows.push((
        "  failed by the requester itself".into(),
        r.requester_failed.to_string(),
    ));
    rows.push((
        "ended otherwise than expected".into(),
        r.unexpected.len().to_string(),
    ));
    rows.push(("LOST (job without an end)".into(), r.not_ended.to_string()));
    let still: u64 = r.still.values().sum();
    rows.push(("still in progress on chain".into(), still.to_string()));
    for (status, count) in &r.still {
        rows.push((format!("  {status}"), count.to_string()));
    }
    rows.push((
        "node deaths (restarted, as by systemd)".into(),
        faulter.deaths.len().to_string(),
    ));
    for call in ["start_task", "submit_result", "fail_task"] {
        rows.push((
            format!("max {call} per task"),
            r.max_calls.get(call).copied().unwrap_or(0).to_string(),
        ));
    }
    rows.push((
        "DOUBLED (sent after it took effect)".into(),
        r.doubled.len().to_string(),
    ));
    rows.push((
        "slashes deserved (fail model)".into(),
        r.deserved.to_string(),
    ));
    rows.push(("WRONGFUL slashes".into(), r.wrongful.len().to_string()));
    for (cause, count) in &r.hook_slashes {
        rows.push((format!("slashes by others: {cause}"), count.to_string()));
    }
    for f in ALL_FAULTS {
        rows.push((
            format!("faults: {}", f.name()),
            faulter.injected.get(&f).copied().unwrap_or(0).to_string(),
        ));
    }
    rows.push((
        "latency p50 (created → verified)".into(),
        percentile(&mut soak.ledger.latencies, 0.5),
    ));
    rows.push((
        "latency p99".into(),
        percentile(&mut soak.ledger.latencies, 0.99),
    ));
    rows.push(("blocks".into(), soak.chain.head_number().to_string()));
    rows.push(("elapsed".into(), format!("{:.1} s", elapsed.as_secs_f64())));
    println!("+{:-<42}+{:-<12}+", "", "");
    for (k, v) in rows {
        println!("| {k:<40} | {v:>10} |");
    }
    println!("+{:-<42}+{:-<12}+", "", "");
    for line in r
        .unexpected
        .iter()
        .chain(&r.doubled)
        .chain(&r.wrongful)
        .chain(&r.stuck)
        .chain(&faulter.deaths)
        .take(30)
    {
        println!("  ! {line}");
    }
}

async fn soak(args: Args) -> Result<bool, String> {
    let faults = Fault::parse_list(&args.faults)?;
    let accounts = NODE_ACCOUNTS
        .get(..args.nodes)
        .filter(|a| !a.is_empty())
        .ok_or(format!("--nodes is 1 to {}", NODE_ACCOUNTS.len()))?;
    let block = Duration::from_millis(args.block_ms.max(1));
    let mut genesis = DevGenesis::development();
    genesis.executors = accounts
        .iter()
        .map(|a| (*a, 100_000 * UNIT, vec![Lane::Lane0, Lane::Lane1]))
        .collect();
    let chain = DevChain::new(DevConfig {
        genesis,
        block_mode: BlockMode::Interval(block),
        finality_lag: Some(args.finality_lag),
        auto_attest: Some(90),
        ..DevConfig::default()
    })
    .map_err(|e| e.to_string())?;
    if faults.contains(&Fault::Reorg) {
        chain.enable_forks(3);
    }

    let dir = std::env::temp_dir().join(format!(
        "nsn-lane1-soak-{}-{}",
        std::process::id(),
        args.seed
    ));
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).map_err(|e| e.to_string())?;
    let store = BlobStore::with_dir(&store_dir).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let nsn = faults.contains(&Fault::NsnSidecar);
    let setup_fault_file = dir.join("setup-fault");
    if !(1..=8).contains(&args.sidecars) {
        return Err(format!("--sidecars is 1 to 8, not {}", args.sidecars));
    }
    // Every sidecar reads the one store directory (as sidecars share IPFS).
    let mut sidecars = Vec::new();
    let mut members = Vec::new();
    for i in 0..args.sidecars {
        let port = if i == 0 {
            port
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
        };
        let mut sidecar = SidecarProcess::new(
            &args,
            port,
            &store_dir,
            nsn.then_some(setup_fault_file.as_path()),
        );
        sidecar.start().await?;
        eprintln!(
            "sidecar: {} {}",
            sidecar.command.0.display(),
            sidecar.command.1.join(" ")
        );
        let client = SidecarClient::connect_lazy(SidecarConfig::new(format!("http://{port}")))
            .map_err(|e| e.to_string())?;
        members.push((client, executor_config(block).max_concurrent));
        sidecars.push(sidecar);
    }
    // The meddler works on the first sidecar's port.
    let client = members[0].0.clone();
    let set = SidecarSet::new(members);

    let signers = nsn_lane1::signer::Signers::default();
    let mut nodes: Vec<SoakNode> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| SoakNode {
            account: *a,
            signers: signers.clone(),
            cut: Cut::new(),
            checkpoint: Checkpoint::new(dir.join(format!("node-{i}.block"))),
            node: None,
        })
        .collect();
    for n in &mut nodes {
        n.spawn(&chain, &set, block);
    }
    let lane1 = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let requester_failed = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let faulter = Faulter {
        faults,
        deck: Vec::new(),
        setup_fault_file,
        meddler: client,
        store: store.clone(),
        requester_failed: requester_failed.clone(),
        chain: chain.clone(),
        sidecars,
        client: set,
        nodes,
        rng: Rng(args.seed ^ 0x5EED_FA17),
        every: Duration::from_millis(args.fault_every_ms.max(2)),
        block,
        lane1: lane1.clone(),
        injected: BTreeMap::new(),
        lane0: tokio::task::JoinSet::new(),
        lane0_posted: 0,
        deaths: Vec::new(),
    };
    let mut soak = Soak {
        nsn,
        requester_failed,
        rng: Rng(args.seed),
        args,
        chain,
        store,
        ledger: Ledger::default(),
        lane1,
    };
    let started = Instant::now();
    let all_posted = tokio_util::sync::CancellationToken::new();
    let faults = tokio::spawn(faulter.run(all_posted.clone()));
    let result = soak.run(all_posted.clone()).await;
    all_posted.cancel();
    let elapsed = started.elapsed();
    let mut faulter = faults.await.map_err(|e| e.to_string())??;
    let accounts = faulter.node_accounts();
    // For a job that did not end: where each node's board has its task, and
    // the calls made for it (before the nodes stop).
    let unfinished: Vec<TaskId> = soak.chain.with_market(|m| {
        soak.ledger
            .task_job
            .keys()
            .filter(|id| m.task(**id).is_some_and(|t| !t.status.is_terminal()))
            .copied()
            .collect()
    });
    for id in &unfinished {
        for n in &faulter.nodes {
            if let Some(node) = &n.node {
                eprintln!(
                    "  ? task {id}: board of {:?}: {:?}",
                    n.account,
                    node.board.get(*id)
                );
            }
        }
        for x in soak
            .chain
            .extrinsics()
            .iter()
            .filter(|x| x.call.task_id() == Some(*id))
        {
            eprintln!(
                "  ? task {id}: {:?} by {:?} → {:?}",
                x.call, x.origin, x.result
            );
        }
    }
    for n in &mut faulter.nodes {
        if let Some(node) = n.node.take() {
            let _ = node.stop().await;
        }
    }
    for sidecar in &mut faulter.sidecars {
        sidecar.kill().await;
    }
    let record = read_record(&soak, &accounts);
    soak.chain.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    print_table(&mut soak, &faulter, &record, elapsed);
    result?;
    let injected_all = faulter
        .faults
        .iter()
        .all(|f| faulter.injected.contains_key(f));
    if !injected_all {
        println!("  ! a fault kind asked for was never injected");
    }
    Ok(record.not_ended == 0
        && record.still.is_empty()
        && record.unexpected.is_empty()
        && record.doubled.is_empty()
        && record.wrongful.is_empty()
        && faulter.deaths.is_empty()
        && injected_all)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let (Some(addr), Some(dir)) = (args.serve_sidecar, args.store_dir.clone()) {
        return runtime.block_on(serve_sidecar(
            addr,
            dir,
            args.semantics,
            args.setup_fault_file.clone(),
        ));
    }
    if std::env::var("NSN_LANE1_LOG").is_ok() {
        let _ = nsn_lane1::telemetry::init_tracing(
            &std::env::var("NSN_LANE1_LOG").unwrap_or_default(),
            nsn_lane1::config::LogFormat::Text,
        );
    }
    match runtime.block_on(soak(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            println!("FAILED: something was lost, sent twice or wrongly slashed");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
