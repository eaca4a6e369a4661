//! How busy one node keeps its sidecar on a chain at real timing: the dev
//! chain building a block every 600 ms with finality two blocks behind (the
//! NSN chain at a tenth of its 6 s), one node with one sidecar slot, and 40
//! tasks of the `sleep` model (100 ms, then 300 ms) posted up front.
//!
//! For the standard stack (optimistic start, the sidecar slot held only
//! while a model runs, tasks started ahead) and for the serial lifecycle of
//! old (start → wait for its block → execute → submit → wait for its block,
//! one task after the other, kept here as the baseline), it reports:
//!
//! - the **sidecar busy fraction**: Σ model time ÷ (last run's end − first
//!   run's start), measured by the sidecar;
//! - **tasks per second** over that span, against 1 ÷ model time;
//!
//! and, for the standard stack, the time from an assignment's finalized
//! block reaching the node to its `ExecuteTask` at an idle sidecar.
//!
//! `cargo bench --bench utilization` (`UTILIZATION_TASKS` sets the tasks per
//! measurement, default 40).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use futures::StreamExt;
use nsn_lane1::chain::dev::DevChain;
use nsn_lane1::chain::{ChainPort, MarketEvent};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::listener::{ChainListener, TaskEvent};
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::{ExecuteRequest, Parameters};
use nsn_lane1::stack::submit_stack;
use nsn_lane1::submitter::MarketCalls;
use nsn_lane1::task::{AccountId, ModelId, TaskId};
use nsn_lane1::telemetry::metrics::Lane1Metrics;
use support::TestSidecar;
use tokio::time::Instant;
use tower::ServiceExt;

const BLOCK: Duration = support::TENTH_BLOCK;
const LAG: u32 = support::TENTH_LAG;

fn chain() -> DevChain {
    support::tenth_scale_chain()
}

fn sleep_for(ms: u64) -> Parameters {
    Parameters::json(&serde_json::json!({ "duration_ms": ms }))
}

/// Posts `n` sleep tasks and has them assigned, all calls pipelined.
async fn post(chain: &DevChain, sidecar: &TestSidecar, n: usize, tag: &str) -> Vec<TaskId> {
    let creates = (0..n)
        .map(|i| {
            let cid = sidecar
                .sidecar
                .store()
                .put(format!("{tag} {i}").into_bytes())
                .expect("input");
            support::lane1_task_due("sleep", &cid, 10_000)
        })
        .collect();
    support::create_and_assign(chain, creates).await
}

/// What the sidecar's runs show.
struct Measured {
    runs: usize,
    busy: Duration,
    span: Duration,
}

impl Measured {
    fn of(sidecar: &TestSidecar, ids: &[TaskId]) -> Self {
        let ids: std::collections::HashSet<String> = ids.iter().map(ToString::to_string).collect();
        let runs: Vec<_> = sidecar
            .sidecar
            .run_history()
            .into_iter()
            .filter(|r| ids.contains(&r.task_id))
            .collect();
        let first = runs.iter().map(|r| r.started).min().expect("runs");
        let last = runs.iter().map(|r| r.ended).max().expect("runs");
        Measured {
            runs: runs.len(),
            busy: runs.iter().map(|r| r.ended - r.started).sum(),
            span: last - first,
        }
    }

    fn busy_fraction(&self) -> f64 {
        self.busy.as_secs_f64() / self.span.as_secs_f64()
    }

    fn tasks_per_second(&self) -> f64 {
        self.runs as f64 / self.span.as_secs_f64()
    }
}

/// The standard node: 40 tasks through the stack.
async fn standard(model_ms: u64, n: usize) -> Measured {
    let chain = chain();
    let sidecar = TestSidecar::start();
    let mut config = ExecutorConfig {
        max_concurrent: 1,
        ..ExecutorConfig::default()
    };
    config
        .model_parameters
        .insert(ModelId::new("sleep").expect("id"), sleep_for(model_ms));
    let node = Node::spawn(
        config,
        NodeParts::dev(&chain, AccountId::BOB, sidecar.client()),
    );
    node.following().await;
    let ids = post(&chain, &sidecar, n, "standard").await;
    for id in &ids {
        node.board.wait_done(*id).await;
    }
    let _ = node.stop().await;
    chain.shutdown();
    Measured::of(&sidecar, &ids)
}

/// The serial lifecycle, one task at a time: `start_task` and wait for its
/// block, run, `submit_result` and wait for its block.
async fn serial(model_ms: u64, n: usize) -> Measured {
    let chain = chain();
    let sidecar = TestSidecar::start();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let listener = ChainListener::new(
        chain.clone(),
        AccountId::BOB,
        None,
        tx,
        Lane1Metrics::default(),
    );
    tokio::spawn(listener.run(None));
    let calls = MarketCalls::new(submit_stack(
        &ExecutorConfig::default(),
        chain.submitter(AccountId::BOB),
        chain.clone(),
        AccountId::BOB,
        Default::default(),
    ));
    let client = sidecar.client();
    let ids = post(&chain, &sidecar, n, "serial").await;
    let mut done = 0;
    while done < n {
        let Some(TaskEvent::AssignedToMe { task }) = rx.recv().await else {
            continue;
        };
        calls.start_task(task.id).await.expect("started");
        let mut request = ExecuteRequest::for_task(&task, None);
        request.parameters = sleep_for(model_ms);
        let out = client.execute().oneshot(request).await.expect("ran");
        calls
            .submit_result(task.id, &out.output_cid, None)
            .await
            .expect("submitted");
        done += 1;
    }
    chain.shutdown();
    Measured::of(&sidecar, &ids)
}

/// From an assignment's finalized block reaching the node to the sidecar
/// starting its run, at an idle sidecar: the median of `n` tasks posted one
/// at a time.
async fn idle_latency(n: usize) -> Duration {
    let chain = chain();
    let sidecar = TestSidecar::start();
    let mut config = ExecutorConfig::default();
    config
        .model_parameters
        .insert(ModelId::new("sleep").expect("id"), sleep_for(10));
    let node = Node::spawn(
        config,
        NodeParts::dev(&chain, AccountId::BOB, sidecar.client()),
    );
    node.following().await;
    // Another follower of finalized blocks, timestamping when each arrives
    // (the node's listener hears of it at the same moment).
    let mut finalized = chain.finalized_blocks(None);
    let mut latencies = Vec::new();
    for i in 0..n {
        let ids = post(&chain, &sidecar, 1, &format!("idle {i}")).await;
        let id = ids[0];
        let seen = loop {
            let block = finalized.next().await.expect("stream").expect("block");
            let now = Instant::now();
            if block.events.iter().any(
                |r| matches!(r.event, MarketEvent::TaskAssigned { task_id, .. } if task_id == id),
            ) {
                break now;
            }
        };
        node.board.wait_done(id).await;
        let run = sidecar
            .sidecar
            .run_history()
            .into_iter()
            .find(|r| r.task_id == id.to_string())
            .expect("its run");
        latencies.push(run.started.saturating_duration_since(seen));
    }
    let _ = node.stop().await;
    chain.shutdown();
    latencies.sort();
    latencies[latencies.len() / 2]
}

fn main() {
    let n: usize = std::env::var("UTILIZATION_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "utilization: {n} sleep tasks, block {} ms, finality lag {LAG}, max_concurrent 1",
            BLOCK.as_millis()
        );
        for model_ms in [100u64, 300] {
            let ideal = 1000.0 / model_ms as f64;
            let s = standard(model_ms, n).await;
            println!(
                "utilization/standard model {model_ms:>3} ms  busy: {:>5.1} %  tasks/s: {:>5.2}  (1 ÷ model time: {ideal:.2})  span: {:>7.2?}",
                s.busy_fraction() * 100.0,
                s.tasks_per_second(),
                s.span
            );
            let b = serial(model_ms, n).await;
            println!(
                "utilization/serial   model {model_ms:>3} ms  busy: {:>5.1} %  tasks/s: {:>5.2}  (1 ÷ model time: {ideal:.2})  span: {:>7.2?}",
                b.busy_fraction() * 100.0,
                b.tasks_per_second(),
                b.span
            );
            println!(
                "utilization/ratio    model {model_ms:>3} ms  tasks/s standard ÷ serial: {:.1}×",
                s.tasks_per_second() / b.tasks_per_second()
            );
        }
        let latency = idle_latency(9).await;
        println!(
            "utilization/idle     finalized assignment → ExecuteTask at the sidecar (median of 9): {latency:.2?}  (target ≤ 5 ms)"
        );
    });
}
