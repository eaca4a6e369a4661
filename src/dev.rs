// Over ~600 lines: `nsn-lane1 dev` whole — its options, its summary and
// the requester that drives the chain — kept together as the one place a
// reader learns what the demo does.
//! The embedded default: a dev chain, the reference sidecar and a Lane 1 node
//! in one process, with a requester that posts a stream of Lane 1 tasks (and,
//! optionally, Lane 0 bursts that preempt them). This is what `nsn-lane1 dev`
//! runs.
//!
//! ```no_run
//! use nsn_lane1::dev::{DevOptions, run_dev};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let summary = run_dev(DevOptions { tasks: Some(20), ..DevOptions::default() }, std::future::pending()).await?;
//! assert_eq!(summary.resolved(), 20);
//! print!("{}", summary.table());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::chain::dev::{BlockMode, DevChain, DevChainError, DevConfig, DevGenesis, DevSubmitter};
use crate::chain::{ChainPort, MarketCall, MarketEvent, SubmitExt, created_task_id};
use crate::executor::{ExecutorConfig, ExecutorReport};
use crate::node::{Node, NodeError, NodeParts};
use crate::sidecar::client::{SidecarClient, SidecarConfig, SidecarConfigError};
use crate::sidecar::server::ReferenceSidecar;
use crate::sidecar::store::BlobStore;
use crate::task::{AccountId, FailReason, Lane, Priority, TaskId, UNIT};
use crate::telemetry::metrics::Lane1Metrics;

/// The stake of the demo's executors.
pub const DEMO_STAKE: crate::task::Balance = 10_000 * UNIT;

/// The accounts of the demo's nodes, in order (Alice posts tasks; Dave and
/// Eve are the validators).
pub const DEV_NODE_ACCOUNTS: [AccountId; 3] =
    [AccountId::BOB, AccountId::CHARLIE, AccountId::FERDIE];

/// What `nsn-lane1 dev` does.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Lane 1 tasks to post; the run ends when all are resolved (`None`: run
    /// until stopped).
    pub tasks: Option<u64>,
    /// Block time (`None`: a block per transaction).
    pub block_time: Option<Duration>,
    /// Blocks the finalized head trails the best block by (`None`: 2 with a
    /// block time, 0 without).
    pub finality_lag: Option<u32>,
    /// Models to post tasks for, in turn.
    pub models: Vec<String>,
    /// Post a Lane 0 task after every this many Lane 1 tasks.
    pub lane0_every: Option<u64>,
    /// Most posted tasks not yet resolved.
    pub backlog: usize,
    /// Lane 1 nodes, each with an account of its own (Bob, Charlie,
    /// Ferdie), sharing one reference sidecar: at most [`DEV_NODE_ACCOUNTS`].
    pub nodes: usize,
    /// Reference sidecars, each of `executor.max_concurrent` slots, behind
    /// every node's one set (1 to 16).
    pub sidecars: usize,
    /// The executor's settings.
    pub executor: ExecutorConfig,
    /// Draw a progress line on standard error (when it is a terminal).
    pub progress: bool,
    /// Where the node's metrics go.
    pub metrics: Lane1Metrics,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (`None`: not served).
    pub telemetry_listen: Option<std::net::SocketAddr>,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            tasks: None,
            block_time: None,
            finality_lag: None,
            models: ["sha256", "uppercase", "mandelbrot", "noop"]
                .map(String::from)
                .to_vec(),
            lane0_every: None,
            backlog: 64,
            nodes: 1,
            sidecars: 1,
            executor: ExecutorConfig::default(),
            progress: false,
            metrics: Lane1Metrics::default(),
            telemetry_listen: None,
        }
    }
}

/// Why the dev run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The dev chain would not start.
    #[error(transparent)]
    Chain(#[from] DevChainError),
    /// The sidecar would not start.
    #[error("reference sidecar: {0}")]
    Sidecar(String),
    /// The sidecar client was refused.
    #[error(transparent)]
    Client(#[from] SidecarConfigError),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Posting a task failed.
    #[error("requester: {0}")]
    Requester(String),
    /// A model name is not a model.
    #[error("no such model: {0}")]
    Model(String),
    /// More nodes than the demo has accounts for, or none.
    #[error("the demo runs 1 to 16 sidecars, not {0}")]
    Sidecars(usize),
    /// More nodes than development accounts were asked for.
    #[error("the demo runs 1 to {max} nodes, not {0}", max = DEV_NODE_ACCOUNTS.len())]
    Nodes(usize),
    /// The telemetry endpoint could not listen.
    #[error("cannot serve telemetry on {addr}: {source}")]
    Telemetry {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What happened in a dev run.
#[derive(Clone, Debug, Default)]
pub struct DevSummary {
    /// Lane 1 tasks created (re-posts included).
    pub created: u64,
    /// Tasks the chain failed as `Preempted` that the requester posted
    /// again, as a new task (so that every job ends verified).
    pub reposted: u64,
    /// Lane 1 tasks assigned.
    pub assigned: u64,
    /// Results submitted.
    pub submitted: u64,
    /// Tasks verified and paid.
    pub verified: u64,
    /// Tasks rejected.
    pub rejected: u64,
    /// Tasks failed, by reason.
    pub failed: HashMap<FailReason, u64>,
    /// Tasks expired.
    pub expired: u64,
    /// Lane 0 tasks posted.
    pub lane0: u64,
    /// Creation → verification times.
    pub latencies: Vec<Duration>,
    /// Wall-clock duration.
    pub elapsed: Duration,
    /// Blocks the chain built during the run.
    pub blocks: u32,
    /// What the executors reported, summed over the nodes.
    pub executor: ExecutorReport,
    /// Each node's account, report, payments and slashes.
    pub nodes: Vec<NodeSummary>,
    /// Tasks that more than one account started on chain (counted from the
    /// chain's extrinsics; must be 0).
    pub started_twice: u64,
    /// The sidecars' runs, all together: how long each took, and when the
    /// first began and the last ended.
    pub runs: SidecarRuns,
    /// Each sidecar's runs (with several).
    pub sidecars: Vec<SidecarRuns>,
}

/// A development account's name, or the start of its hex.
fn short(a: &AccountId) -> String {
    match *a {
        AccountId::BOB => "bob".into(),
        AccountId::CHARLIE => "charlie".into(),
        AccountId::FERDIE => "ferdie".into(),
        other => other.to_string().chars().take(10).collect(),
    }
}

/// One node of a dev run.
#[derive(Clone, Debug)]
pub struct NodeSummary {
    /// Its account.
    pub account: AccountId,
    /// What its executor reported.
    pub report: ExecutorReport,
    /// Slashes its own calls caused (must be 0).
    pub own_slashes: u32,
    /// Slashes the pallet's hooks imposed (preemption while Lane 0 work
    /// was open, a missed verification deadline, a low score).
    pub rule_slashes: u32,
}

/// How busy the sidecar was.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SidecarRuns {
    /// Runs that ended.
    pub count: u64,
    /// The time with at least one run (the union of their spells).
    pub busy: Duration,
    /// From the first run's start to the last run's end.
    pub span: Duration,
}

impl SidecarRuns {
    /// Measures the runs in `history`.
    pub fn of(history: &[crate::sidecar::server::RunRecord]) -> Self {
        let (Some(first), Some(last)) = (
            history.iter().map(|r| r.started).min(),
            history.iter().map(|r| r.ended).max(),
        ) else {
            return SidecarRuns::default();
        };
        // The time with at least one run, as `lane1_sidecar_busy_seconds`
        // measures it: the union of the runs' spells, never more than the
        // span however many run at once.
        let mut spells: Vec<_> = history.iter().map(|r| (r.started, r.ended)).collect();
        spells.sort();
        let mut busy = Duration::ZERO;
        let mut open: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
        for (start, end) in spells {
            match &mut open {
                Some((_, until)) if start <= *until => *until = (*until).max(end),
                _ => {
                    if let Some((from, until)) = open.replace((start, end)) {
                        busy += until - from;
                    }
                }
            }
        }
        if let Some((from, until)) = open {
            busy += until - from;
        }
        SidecarRuns {
            count: history.len() as u64,
            busy,
            span: last - first,
        }
    }

    /// Time with at least one run ÷ (last run end − first run start): 1.0
    /// when a model was always running, never more; `None` before any run.
    pub fn busy_fraction(&self) -> Option<f64> {
        (!self.span.is_zero()).then(|| self.busy.as_secs_f64() / self.span.as_secs_f64())
    }
}

impl DevSummary {
    /// The requester's jobs that reached an end: verified, rejected, failed
    /// or expired (a task failed as `Preempted` and posted again has not:
    /// its re-post will).
    pub fn resolved(&self) -> u64 {
        (self.verified + self.rejected + self.failed.values().sum::<u64>() + self.expired)
            .saturating_sub(self.reposted)
    }

    /// Failed with `Preempted`.
    pub fn preempted(&self) -> u64 {
        self.failed
            .get(&FailReason::Preempted)
            .copied()
            .unwrap_or(0)
    }

    fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let idx = ((v.len() - 1) as f64 * p).round() as usize;
        v.get(idx).copied()
    }

    /// The summary as a table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1e3)
            })
        };
        let mut rows: Vec<(String, String)> = vec![
            ("created", self.created.to_string()),
            ("assigned", self.assigned.to_string()),
            ("submitted", self.submitted.to_string()),
            ("verified", self.verified.to_string()),
            ("rejected", self.rejected.to_string()),
            ("failed", self.failed.values().sum::<u64>().to_string()),
            ("  preempted", self.preempted().to_string()),
            ("re-posted", self.reposted.to_string()),
            ("expired", self.expired.to_string()),
            ("lane 0 posted", self.lane0.to_string()),
            ("started twice", self.started_twice.to_string()),
            (
                "sidecar busy",
                self.runs
                    .busy_fraction()
                    .map_or("-".to_owned(), |f| format!("{:.1} %", f * 100.0)),
            ),
            ("latency p50", ms(self.percentile(0.5))),
            ("latency p99", ms(self.percentile(0.99))),
            ("blocks", self.blocks.to_string()),
            ("elapsed", format!("{:.2} s", self.elapsed.as_secs_f64())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        // With several sidecars, each one's runs and busy time, after the
        // all-together row.
        let at = rows
            .iter()
            .position(|(k, _)| k == "sidecar busy")
            .map_or(rows.len(), |i| i + 1);
        for (i, runs) in self.sidecars.iter().enumerate().rev() {
            let busy = runs
                .busy_fraction()
                .map_or("-".to_owned(), |f| format!("{:.1} %", f * 100.0));
            rows.insert(
                at,
                (
                    format!("  sidecar {}", i + 1),
                    format!("{busy} ({})", runs.count),
                ),
            );
        }
        let _ = writeln!(t, "+-----------------+--------------+");
        for (k, v) in rows {
            let _ = writeln!(t, "| {k:<15} | {v:>12} |");
        }
        let _ = writeln!(t, "+-----------------+--------------+");
        if self.nodes.len() > 1
            || self
                .nodes
                .iter()
                .any(|n| n.own_slashes + n.rule_slashes > 0)
        {
            let _ = writeln!(
                t,
                "{:<10} {:>9} {:>14} {:>12} {:>10} {:>11}",
                "node", "submitted", "verified L0+L1", "paid (UNIT)", "own slash", "hook slash"
            );
            for n in &self.nodes {
                let _ = writeln!(
                    t,
                    "{:<10} {:>9} {:>14} {:>12.2} {:>10} {:>11}",
                    short(&n.account),
                    n.report.submitted,
                    n.report.verified,
                    n.report.paid as f64 / UNIT as f64,
                    n.own_slashes,
                    n.rule_slashes
                );
            }
        }
        t
    }
}

/// Runs the embedded default until `tasks` are resolved or `shutdown` resolves.
pub async fn run_dev(
    opts: DevOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<DevSummary, DevError> {
    for m in &opts.models {
        if crate::sidecar::models::find(m).is_none_or(|s| !s.lanes.contains(&Lane::Lane1)) {
            return Err(DevError::Model(m.clone()));
        }
    }
    let started = Instant::now();
    // The chain's preemption hook slashes the executor of each Lane 1 task
    // it preempts (5 UNIT, the deployed pallet's rule); a long demo with
    // Lane 0 bursts would exhaust the development genesis' 100 UNIT, so the
    // demo's executor stakes more.
    let accounts = DEV_NODE_ACCOUNTS
        .get(..opts.nodes)
        .filter(|a| !a.is_empty())
        .ok_or(DevError::Nodes(opts.nodes))?;
    let mut genesis = DevGenesis::development();
    genesis.executors = accounts
        .iter()
        .map(|a| (*a, DEMO_STAKE, vec![Lane::Lane0, Lane::Lane1]))
        .collect();
    let chain = DevChain::new(DevConfig {
        genesis,
        block_mode: opts
            .block_time
            .map_or(BlockMode::Instant, BlockMode::Interval),
        finality_lag: opts.finality_lag,
        ..DevConfig::default()
    })?;

    // The reference sidecars, each on a loopback port of its own, sharing
    // one input store (as sidecars share IPFS).
    if !(1..=16).contains(&opts.sidecars) {
        return Err(DevError::Sidecars(opts.sidecars));
    }
    let store = BlobStore::in_memory();
    let stop_sidecar = tokio_util::sync::CancellationToken::new();
    let mut sidecars = Vec::new();
    let mut sidecar_tasks = Vec::new();
    let mut members = Vec::new();
    let slots = opts.executor.max_concurrent.max(1);
    for _ in 0..opts.sidecars {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| DevError::Sidecar(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| DevError::Sidecar(e.to_string()))?;
        let sidecar = ReferenceSidecar::new(store.clone());
        sidecars.push(sidecar.clone());
        sidecar_tasks.push(tokio::spawn(
            sidecar.serve(listener, stop_sidecar.clone().cancelled_owned()),
        ));
        let client = SidecarClient::connect_lazy(SidecarConfig::new(format!("http://{addr}")))?;
        members.push((client, slots));
    }
    let set = crate::sidecar::set::SidecarSet::new(members);

    let stop_telemetry = tokio_util::sync::CancellationToken::new();
    if let Some(at) = opts.telemetry_listen {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|source| DevError::Telemetry { addr: at, source })?;
        if let Ok(bound) = listener.local_addr() {
            tracing::info!(addr = %bound, "telemetry on /metrics /healthz /readyz");
        }
        let ready = crate::node::ready_check(chain.clone(), set.clone(), None);
        tokio::spawn(crate::telemetry::http::serve(
            listener,
            opts.metrics.registry.clone(),
            ready,
            stop_telemetry.clone().cancelled_owned(),
        ));
    }

    let mut executor = opts.executor.clone();
    // Each sidecar has the slots asked for: the node runs them all.
    executor.max_concurrent = slots * opts.sidecars;
    if let Some(block_time) = opts.block_time {
        // Admission turns model latencies into blocks of this chain.
        executor.admission.block_time = block_time;
    }
    let nodes: Vec<(AccountId, Node)> = accounts
        .iter()
        .map(|account| {
            let node = Node::spawn(
                executor.clone(),
                NodeParts::dev(&chain, *account, set.clone()).metrics(opts.metrics.clone()),
            );
            (*account, node)
        })
        .collect();
    // The Lane 0 side signs as the node it plays, in the node's record.
    let signers = crate::signer::Signers::default();
    for (account, node) in &nodes {
        signers.set(*account, node.nonces.clone());
    }

    let mut summary = DevSummary::default();
    let result = drive(&opts, &chain, &store, &mut summary, &signers, shutdown).await;
    for (account, node) in nodes {
        let report = node.stop().await?;
        summary.executor.absorb(&report);
        let slashes = chain.with_market(|m| m.slashes(&account));
        let own = chain.with_market(|m| m.slashes_by_own_calls(&account));
        summary.nodes.push(NodeSummary {
            account,
            report,
            own_slashes: own,
            rule_slashes: slashes.values().sum::<u32>().saturating_sub(own),
        });
    }
    summary.started_twice = started_by_two(&chain.extrinsics());
    summary.blocks = chain.head_number();
    chain.shutdown();
    stop_telemetry.cancel();
    stop_sidecar.cancel();
    for task in sidecar_tasks {
        let _ = task.await;
    }
    summary.elapsed = started.elapsed();
    let histories: Vec<_> = sidecars.iter().map(ReferenceSidecar::run_history).collect();
    summary.runs = SidecarRuns::of(&histories.concat());
    if sidecars.len() > 1 {
        summary.sidecars = histories.iter().map(|h| SidecarRuns::of(h)).collect();
    }
    if opts.progress && std::io::stderr().is_terminal() {
        eprintln!();
    }
    result.map(|()| summary)
}

/// Tasks whose `start_task` succeeded for more than one account.
fn started_by_two(extrinsics: &[crate::chain::dev::Extrinsic]) -> u64 {
    let mut starters: HashMap<TaskId, std::collections::HashSet<AccountId>> = HashMap::new();
    for x in extrinsics {
        if let (MarketCall::StartTask { task_id }, Ok(()), crate::chain::dev::Origin::Signed(who)) =
            (&x.call, &x.result, x.origin)
        {
            starters.entry(*task_id).or_default().insert(who);
        }
    }
    starters.values().filter(|s| s.len() > 1).count() as u64
}

/// A Lane 1 task the requester wants done: posted again, as a new task,
/// when the chain fails it as `Preempted`.
#[derive(Clone)]
struct Job {
    model: String,
    input: Vec<u8>,
}

/// What one of the requester's chain interactions came to.
enum Done {
    /// A Lane 1 task (and a Lane 0 task before it, if asked) was created.
    Posted {
        id: TaskId,
        job: Job,
        lane0: Option<TaskId>,
    },
    /// Assignments were asked for; these were refused for now.
    Assigning { refused: Vec<TaskId> },
    /// The node's Lane 0 side delivered a Lane 0 task.
    Lane0Served,
}

type Step = futures::future::BoxFuture<'static, Result<Done, DevError>>;

/// Posts tasks and follows the chain until the run is over. Every chain
/// interaction runs beside the others (none waits for another's block):
/// posts, the Lane 0 side's work, and one batch of assignments at a time,
/// asked for only while no Lane 0 work is open (the chain would refuse
/// them with `Lane0Priority`) and again after each block until taken.
async fn drive(
    opts: &DevOptions,
    chain: &DevChain,
    store: &BlobStore,
    summary: &mut DevSummary,
    signers: &crate::signer::Signers,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DevError> {
    let requester = chain.submitter(AccountId::ALICE);
    let mut blocks = chain.finalized_blocks(Some(chain.head_number() + 1));
    let mut created_at: HashMap<TaskId, Instant> = HashMap::new();
    let mut jobs: HashMap<TaskId, Job> = HashMap::new();
    let mut unassigned: Vec<TaskId> = Vec::new();
    let mut assigning = false;
    let mut steps = futures::stream::FuturesUnordered::<Step>::new();
    let mut posted = 0u64;
    let draw = opts.progress && std::io::stderr().is_terminal();
    tokio::pin!(shutdown);

    loop {
        // Posted and not yet resolved: the requester's backlog.
        let open = posted.saturating_sub(summary.resolved());
        let want_more = opts.tasks.is_none_or(|n| posted < n);
        if want_more && (open as usize) < opts.backlog {
            let i = posted;
            posted += 1;
            let job = Job {
                model: opts.models[(i as usize) % opts.models.len()].clone(),
                input: store
                    .put(format!("dev task {i}").into_bytes())
                    .map_err(|e| DevError::Requester(e.to_string()))?
                    .as_bytes()
                    .to_vec(),
            };
            let lane0 = opts
                .lane0_every
                .is_some_and(|k| k > 0 && i > 0 && i.is_multiple_of(k));
            steps.push(Box::pin(post(requester.clone(), job, lane0)));
            continue;
        }
        if opts.tasks.is_some_and(|n| summary.resolved() >= n) {
            return Ok(());
        }
        if !assigning && !unassigned.is_empty() && !lane0_open(chain).await? {
            assigning = true;
            steps.push(Box::pin(assign_all(
                requester.clone(),
                std::mem::take(&mut unassigned),
            )));
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            Some(done) = steps.next(), if !steps.is_empty() => match done? {
                Done::Posted { id, job, lane0 } => {
                    jobs.insert(id, job);
                    unassigned.push(id);
                    if let Some(l0) = lane0 {
                        summary.lane0 += 1;
                        steps.push(Box::pin(serve_lane0(chain.clone(), l0, signers.clone())));
                    }
                }
                Done::Assigning { refused } => {
                    assigning = false;
                    unassigned.extend(refused);
                }
                Done::Lane0Served => {}
            },
            block = blocks.next() => {
                let Some(Ok(block)) = block else {
                    return Err(DevError::Requester("the dev chain stopped".into()));
                };
                for r in block.events.iter() {
                    account(summary, &r.event, &mut created_at);
                    // Work the chain failed to make way for Lane 0 is
                    // posted again, as a real requester would.
                    match r.event {
                        MarketEvent::TaskFailed { task_id, reason: FailReason::Preempted } => {
                            if let Some(job) = jobs.remove(&task_id) {
                                summary.reposted += 1;
                                steps.push(Box::pin(post(requester.clone(), job, false)));
                            }
                        }
                        MarketEvent::TaskVerified { task_id, .. }
                        | MarketEvent::TaskRejected { task_id, .. }
                        | MarketEvent::TaskFailed { task_id, .. }
                        | MarketEvent::TaskExpired { task_id } => {
                            jobs.remove(&task_id);
                        }
                        _ => {}
                    }
                }
                if draw {
                    progress_line(summary, opts.tasks);
                }
            }
        }
    }
}

/// Whether Lane 0 work is open at the best block (assignments of Lane 1
/// work would be refused).
async fn lane0_open(chain: &DevChain) -> Result<bool, DevError> {
    let fail = |e: crate::chain::ChainError| DevError::Requester(e.to_string());
    let best = chain.best_head().await.map_err(fail)?;
    Ok(!chain
        .open_lane0_tasks(best.hash)
        .await
        .map_err(fail)?
        .is_empty())
}

/// Creates one Lane 1 task (and a Lane 0 task before it, if asked).
async fn post(requester: DevSubmitter, job: Job, lane0: bool) -> Result<Done, DevError> {
    let fail = |e: crate::chain::SubmitError| DevError::Requester(e.to_string());
    let mut lane0_id = None;
    if lane0 {
        let inc = requester
            .clone()
            .submit(MarketCall::CreateTaskIntent {
                lane: Lane::Lane0,
                priority: Priority::High,
                model_requirements: crate::chain::dev::DEV_LANE0_MODEL.as_bytes().to_vec(),
                input_cid: job.input.clone(),
                compute_budget: 1,
                deadline_blocks: 1_000,
                escrow_amount: UNIT,
            })
            .await
            .map_err(fail)?;
        lane0_id = created_task_id(&inc.events);
    }
    let inc = requester
        .clone()
        .submit(MarketCall::CreateTaskIntent {
            lane: Lane::Lane1,
            priority: Priority::Normal,
            model_requirements: job.model.clone().into_bytes(),
            input_cid: job.input.clone(),
            compute_budget: 1_000,
            deadline_blocks: 10_000,
            escrow_amount: UNIT,
        })
        .await
        .map_err(fail)?;
    let id =
        created_task_id(&inc.events).ok_or_else(|| DevError::Requester("no TaskCreated".into()))?;
    Ok(Done::Posted {
        id,
        job,
        lane0: lane0_id,
    })
}

/// Asks the chain to assign each task, all in one go (in one block with a
/// block time); those refused while Lane 0 work is open (`Lane0Priority`)
/// are returned, to be asked again later.
async fn assign_all(requester: DevSubmitter, ids: Vec<TaskId>) -> Result<Done, DevError> {
    let mut pooled = Vec::with_capacity(ids.len());
    for id in ids {
        let submit = requester
            .clone()
            .submit(MarketCall::AcceptAssignment { task_id: id });
        pooled.push(async move { (id, submit.await) });
    }
    let mut refused = Vec::new();
    for (id, result) in futures::future::join_all(pooled).await {
        match result {
            Ok(_) => {}
            Err(e) if e.market_error() == Some(crate::chain::MarketError::Lane0Priority) => {
                refused.push(id);
            }
            Err(e) => return Err(DevError::Requester(e.to_string())),
        }
    }
    Ok(Done::Assigning { refused })
}

async fn serve_lane0(
    chain: DevChain,
    id: TaskId,
    signers: crate::signer::Signers,
) -> Result<Done, DevError> {
    lane0_side(chain, id, &signers)
        .await
        .map(|()| Done::Lane0Served)
}

/// Plays the Lane 0 side of the node the chain assigns a Lane 0 task to (as
/// the full node's video pipeline would, beside its Lane 1 executor): asks
/// for the task's assignment, then starts it and submits a frame as the
/// executor the chain picked. Its nonces go into that node's record in
/// `signers` (it signs with the node's key, as part of the node).
pub async fn lane0_side(
    chain: DevChain,
    id: TaskId,
    signers: &crate::signer::Signers,
) -> Result<(), DevError> {
    let fail = |e: crate::chain::SubmitError| DevError::Requester(format!("lane 0 side: {e}"));
    let accepted = chain
        .submitter(AccountId::ALICE)
        .submit(MarketCall::AcceptAssignment { task_id: id })
        .await
        .map_err(fail)?;
    let executor = accepted
        .events
        .iter()
        .find_map(|e| match e {
            MarketEvent::TaskAssigned { executor, .. } => Some(*executor),
            _ => None,
        })
        .ok_or_else(|| DevError::Requester("lane 0 side: no TaskAssigned".into()))?;
    let lane0_side = chain.submitter(executor);
    let nonces = signers.get(executor);
    let cid = BlobStore::cid_of(b"lane 0 frame");
    let calls = [
        MarketCall::StartTask { task_id: id },
        MarketCall::SubmitResult {
            task_id: id,
            output_cid: cid.as_bytes().to_vec(),
            attestation_cid: Some(cid.as_bytes().to_vec()),
        },
    ];
    for call in calls {
        let pooled = tower::ServiceExt::oneshot(lane0_side.clone(), call)
            .await
            .map_err(fail)?;
        if let (Some(nonces), Some(nonce)) = (&nonces, pooled.nonce()) {
            nonces.signed(nonce);
        }
        pooled.await.map_err(fail)?;
    }
    Ok(())
}

/// Counts an event of a Lane 1 task (the requester posts all of them).
fn account(s: &mut DevSummary, event: &MarketEvent, created_at: &mut HashMap<TaskId, Instant>) {
    if let MarketEvent::TaskCreated {
        task_id,
        lane: Lane::Lane1,
        ..
    } = event
    {
        s.created += 1;
        created_at.insert(*task_id, Instant::now());
        return;
    }
    let Some(id) = event.task_id() else { return };
    let Some(since) = created_at.get(&id).copied() else {
        return;
    };
    let end = match event {
        MarketEvent::TaskAssigned { .. } => {
            s.assigned += 1;
            false
        }
        MarketEvent::TaskSubmitted { .. } => {
            s.submitted += 1;
            false
        }
        MarketEvent::TaskVerified { .. } => {
            s.verified += 1;
            s.latencies.push(since.elapsed());
            true
        }
        MarketEvent::TaskRejected { .. } => {
            s.rejected += 1;
            true
        }
        MarketEvent::TaskFailed { reason, .. } => {
            *s.failed.entry(*reason).or_default() += 1;
            true
        }
        MarketEvent::TaskExpired { .. } => {
            s.expired += 1;
            true
        }
        _ => false,
    };
    if end {
        created_at.remove(&id);
    }
}

fn progress_line(s: &DevSummary, total: Option<u64>) {
    let done = s.resolved();
    let line = match total {
        Some(n) if n > 0 => {
            let width = 30usize;
            let filled = ((done as f64 / n as f64) * width as f64) as usize;
            format!(
                "\r[{}{}] {done}/{n}  verified {}  failed {}  preempted {}",
                "#".repeat(filled.min(width)),
                "-".repeat(width - filled.min(width)),
                s.verified,
                s.failed.values().sum::<u64>(),
                s.preempted()
            )
        }
        _ => format!(
            "\rresolved {done}  verified {}  failed {}  preempted {}",
            s.verified,
            s.failed.values().sum::<u64>(),
            s.preempted()
        ),
    };
    let mut err = std::io::stderr();
    let _ = err.write_all(line.as_bytes());
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::server::{RunRecord, RunState};
    use tokio::time::Instant;

    #[test]
    fn busy_is_the_time_with_at_least_one_run_never_above_the_span() {
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        let run = |from: u64, to: u64| RunRecord {
            task_id: format!("{from}"),
            state: RunState::Completed,
            started: t0 + ms(from),
            ended: t0 + ms(to),
        };
        // Eight runs at once for 100 ms, then a gap, then two that overlap.
        let mut history: Vec<RunRecord> = (0..8).map(|_| run(0, 100)).collect();
        history.push(run(150, 200));
        history.push(run(180, 250));
        let runs = SidecarRuns::of(&history);
        assert_eq!(runs.count, 10);
        assert_eq!(runs.span, ms(250));
        assert_eq!(runs.busy, ms(100 + 100), "0–100 and 150–250");
        let fraction = runs.busy_fraction().unwrap();
        assert!((fraction - 0.8).abs() < 1e-9, "{fraction}");
        assert!(fraction <= 1.0);
    }
}
