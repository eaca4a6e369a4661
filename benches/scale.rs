//! One node, several sidecars, at real chain timing (the dev chain builds a
//! block every 600 ms, finality two behind; reference sidecars on loopback,
//! sharing one input store).
//!
//! - `scale/sidecars N`: N sidecars of one slot each, 100 ms `sleep` tasks
//!   (40 per sidecar, posted up front): tasks per second over the span of
//!   the runs, against N × the one-sidecar figure, and each sidecar's busy
//!   fraction over that span.
//! - `scale/placement`: 3 sidecars with room for 2 loaded models each, a
//!   load taking 2 s, tasks of 4 models in turn, each sidecar starting with
//!   2 of them loaded: tasks per second with the set's model-aware placement
//!   against the same set placing by load alone (`SidecarSet::model_blind`,
//!   what tower's p2c does), and the loads each made.
//! - `scale/kill`: 3 sidecars of one slot, 500 ms tasks; the one running a
//!   task is killed: tasks lost and failed (must be 0), and the time from
//!   the kill to the first run of one of its tasks elsewhere.
//!
//! `cargo bench --bench scale`

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nsn_lane1::chain::MarketCall;
use nsn_lane1::chain::dev::DevChain;
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::Parameters;
use nsn_lane1::sidecar::server::{Residency, RunRecord};
use nsn_lane1::sidecar::set::SidecarSet;
use nsn_lane1::sidecar::store::BlobStore;
use nsn_lane1::task::{AccountId, ModelId, TaskId, TaskStatus};
use support::{TestSidecar, create_and_assign, lane1_task, until_verified};

const BLOCK: Duration = support::TENTH_BLOCK;
const LAG: u32 = support::TENTH_LAG;

fn chain() -> DevChain {
    support::tenth_scale_chain()
}

struct World {
    chain: DevChain,
    store: BlobStore,
    sidecars: Vec<TestSidecar>,
    node: Node,
}

impl World {
    fn start(n: usize, sleep_ms: u64, blind: bool, setup: impl Fn(usize, &TestSidecar)) -> Self {
        let store = BlobStore::in_memory();
        let sidecars: Vec<TestSidecar> = (0..n)
            .map(|_| TestSidecar::start_sharing(store.clone()))
            .collect();
        for (i, s) in sidecars.iter().enumerate() {
            setup(i, s);
        }
        let mut set = SidecarSet::new(sidecars.iter().map(|s| (s.client(), 1)));
        if blind {
            set = set.model_blind();
        }
        let mut config = ExecutorConfig {
            max_concurrent: n,
            ..ExecutorConfig::default()
        };
        config.admission.block_time = BLOCK;
        config.model_parameters.insert(
            ModelId::new("sleep").expect("id"),
            Parameters::json(&serde_json::json!({ "duration_ms": sleep_ms })),
        );
        let chain = chain();
        let node = Node::spawn(config, NodeParts::dev(&chain, AccountId::BOB, set));
        World {
            chain,
            store,
            sidecars,
            node,
        }
    }

    /// Posts a task per model in `models` and has them assigned, pipelined.
    async fn post(&self, models: &[&str], tag: &str) -> Vec<TaskId> {
        let creates = models
            .iter()
            .enumerate()
            .map(|(i, model)| {
                let cid = self
                    .store
                    .put(format!("{tag} {i}").into_bytes())
                    .expect("input");
                lane1_task(model, &cid)
            })
            .collect();
        create_and_assign(&self.chain, creates).await
    }

    async fn finish(self, ids: &[TaskId]) -> Finished {
        for id in ids {
            self.node.board.wait_done(*id).await;
        }
        // Submitted is not the end: wait for the validators' verdicts (a
        // task that never gets one stops the bench).
        for id in ids {
            until_verified(&self.chain, *id, 120).await;
        }
        let _ = self.node.stop().await;
        let verified = ids
            .iter()
            .filter(|id| {
                self.chain.with_market(|m| {
                    m.task(**id)
                        .is_some_and(|t| t.status == TaskStatus::Verified)
                })
            })
            .count();
        let failed = self
            .chain
            .extrinsics()
            .iter()
            .filter(|x| matches!(x.call, MarketCall::FailTask { .. }))
            .count();
        self.chain.shutdown();
        Finished {
            histories: self
                .sidecars
                .iter()
                .map(|s| s.sidecar.run_history())
                .collect(),
            loads: self.sidecars.iter().map(|s| s.sidecar.loads()).collect(),
            verified,
            failed,
        }
    }
}

struct Finished {
    histories: Vec<Vec<RunRecord>>,
    loads: Vec<u64>,
    verified: usize,
    failed: usize,
}

impl Finished {
    fn span(&self) -> Duration {
        let all = self.histories.iter().flatten();
        let first = all.clone().map(|r| r.started).min().expect("runs");
        let last = all.map(|r| r.ended).max().expect("runs");
        last - first
    }

    fn runs(&self) -> usize {
        self.histories.iter().map(Vec::len).sum()
    }

    fn tasks_per_second(&self) -> f64 {
        self.runs() as f64 / self.span().as_secs_f64()
    }

    /// Each sidecar's Σ run time over the whole span.
    fn busy(&self) -> Vec<f64> {
        let span = self.span().as_secs_f64();
        self.histories
            .iter()
            .map(|h| {
                h.iter()
                    .map(|r| (r.ended - r.started).as_secs_f64())
                    .sum::<f64>()
                    / span
            })
            .collect()
    }
}

async fn scaling() {
    let mut one = None;
    for n in [1usize, 2, 4] {
        let world = World::start(n, 100, false, |_, _| {});
        world.node.following().await;
        let models = vec!["sleep"; 40 * n];
        let ids = world.post(&models, &format!("scale {n}")).await;
        let done = world.finish(&ids).await;
        let tps = done.tasks_per_second();
        let base = *one.get_or_insert(tps);
        let busy: Vec<String> = done
            .busy()
            .iter()
            .map(|b| format!("{:.1} %", b * 100.0))
            .collect();
        println!(
            "scale/sidecars {n}  tasks/s: {tps:>5.2}  ({:.2} × one sidecar, {:.2} × N)  busy: [{}]  span: {:.2?}",
            tps / base,
            tps / base / n as f64,
            busy.join(", "),
            done.span()
        );
    }
}

async fn placement() {
    const MODELS: [&str; 4] = ["sleep", "sha256", "uppercase", "noop"];
    // Each sidecar starts with two of the four loaded, every model on
    // some sidecar.
    const WARM: [[&str; 2]; 3] = [
        ["sleep", "sha256"],
        ["uppercase", "noop"],
        ["sleep", "uppercase"],
    ];
    let residency = Residency {
        load: Duration::from_secs(2),
        slots: 2,
    };
    let mut results = Vec::new();
    for blind in [false, true] {
        let world = World::start(3, 100, blind, |i, s| {
            s.sidecar.set_residency(Some(residency));
            for m in WARM[i] {
                assert!(s.sidecar.preload(m));
            }
        });
        world.node.following().await;
        let models: Vec<&str> = (0..48).map(|i| MODELS[i % 4]).collect();
        let ids = world
            .post(&models, if blind { "blind" } else { "aware" })
            .await;
        let done = world.finish(&ids).await;
        let name = if blind {
            "model-blind p2c"
        } else {
            "model-aware"
        };
        println!(
            "scale/placement {name:<15}  tasks/s: {:>6.2}  loads: {:?}  span: {:.2?}",
            done.tasks_per_second(),
            done.loads,
            done.span()
        );
        results.push(done.tasks_per_second());
    }
    println!(
        "scale/placement ratio  model-aware ÷ model-blind: {:.1}×",
        results[0] / results[1]
    );
}

async fn kill() {
    let mut world = World::start(3, 500, false, |_, _| {});
    world.node.following().await;
    let models = vec!["sleep"; 30];
    let ids = world.post(&models, "kill").await;
    world.sidecars[0].sidecar.wait_running().await;
    let lost: HashSet<u64> = world.sidecars[0]
        .sidecar
        .running_ids()
        .iter()
        .filter_map(|r| r.split('-').next()?.parse().ok())
        .collect();
    let killed_at = Instant::now();
    world.sidecars[0].kill();
    let done = world.finish(&ids).await;
    let rerun = done.histories[1..]
        .iter()
        .flatten()
        .filter(|r| {
            r.task_id
                .split('-')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|t| lost.contains(&t))
        })
        .map(|r| r.started)
        .min()
        .map(|at| at.saturating_duration_since(killed_at.into()));
    println!(
        "scale/kill  tasks: {}  verified: {}  lost: {}  fail_task calls: {}  runs lost with the sidecar: {}  kill → first re-run elsewhere: {:.2?}",
        ids.len(),
        done.verified,
        ids.len() - done.verified,
        done.failed,
        lost.len(),
        rerun.unwrap_or_default()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "scale: block {} ms, finality lag {LAG}, one slot per sidecar",
            BLOCK.as_millis()
        );
        // SCALE_ONLY=sidecars|placement|kill runs one part.
        let only = std::env::var("SCALE_ONLY").ok();
        let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
        if runs("sidecars") {
            scaling().await;
        }
        if runs("placement") {
            placement().await;
        }
        if runs("kill") {
            kill().await;
        }
    });
}
