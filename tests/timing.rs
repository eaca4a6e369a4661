//! The lifecycle at real chain timing: the dev chain with a finality lag,
//! blocks built by hand (or on a clock), and the stages that must overlap —
//! the model runs while `start_task` waits for its block, and the sidecar
//! slot is free while `submit_result` waits for its own.
#![cfg(feature = "dev")]

mod support;

use std::time::Duration;

use nsn_lane1::chain::dev::{BlockMode, DevChain, DevSubmitter};
use nsn_lane1::chain::{MarketCall, Pooled, SubmitError};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::lifecycle::TaskOutcome;
use nsn_lane1::sidecar::client::Parameters;
use nsn_lane1::sidecar::server::RunState;
use nsn_lane1::task::{AccountId, Lane, ModelId, TaskStatus};
use support::*;
use tower::ServiceExt;

const BOB: AccountId = AccountId::BOB;

/// Runs `sleep` for `ms` milliseconds.
fn sleeping(ms: u64, config: ExecutorConfig) -> ExecutorConfig {
    let mut config = config;
    config.model_parameters.insert(
        ModelId::new("sleep").expect("model id"),
        Parameters::json(&serde_json::json!({ "duration_ms": ms })),
    );
    config
}

fn config() -> ExecutorConfig {
    ExecutorConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ExecutorConfig::default()
    }
}

/// Blocks by hand, the finalized head two behind the best.
fn manual(c: &mut nsn_lane1::chain::dev::DevConfig) {
    c.block_mode = BlockMode::Manual;
    c.finality_lag = Some(2);
}

/// Posts a `sleep` task and has it assigned, building the blocks by hand
/// and finalizing them, so the node hears of the assignment.
async fn post(h: &Harness, input: &[u8]) -> TaskId {
    let cid = h
        .sidecar
        .sidecar
        .store()
        .put(input.to_vec())
        .expect("input");
    let created = send(&h.requester, lane1_task("sleep", &cid)).await;
    h.chain.produce_block();
    let id = created_id(&created.await.expect("created"));
    let assigned = send(&h.requester, MarketCall::AcceptAssignment { task_id: id }).await;
    let block = h.chain.produce_block();
    assigned.await.expect("assigned");
    h.chain.finalize_to(block.number);
    id
}

/// The task's status in the best block's state.
fn best_status(chain: &DevChain, id: TaskId) -> TaskStatus {
    chain_status(chain, id)
}

/// Builds blocks (finalizing them) until the task is done here, each once
/// the node has handled the finalized head before it: a chain that runs
/// away from a node busy on two shared cores would measure the cores, not
/// the node.
async fn drive_to_done(h: &Harness, id: TaskId) -> TaskOutcome {
    let done = tokio::spawn({
        let board = h.node.board.clone();
        async move { board.wait_done(id).await }
    });
    let handled = h.metrics.handled_block.with(&[]);
    within("the task to finish", async {
        loop {
            h.chain.produce_block();
            if done.is_finished() {
                return done.await.expect("board");
            }
            let finalized = i64::from(h.chain.finalized_number());
            while handled.get() < finalized && !done.is_finished() {
                tokio::task::yield_now().await;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_runs_while_start_task_waits_for_its_block() {
    let h = Harness::start(sleeping(200, config()), manual);
    let id = post(&h, b"a").await;
    h.run_reaches("the optimistic run", id, RunState::Running)
        .await;
    // Running at the sidecar, and the chain has not started it: its
    // start_task is in the pool, in no block yet.
    assert_eq!(h.chain.pool_len(), 1);
    assert_eq!(best_status(&h.chain, id), TaskStatus::Assigned);
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 0);
    assert!(matches!(
        drive_to_done(&h, id).await,
        TaskOutcome::Submitted { .. }
    ));
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_slot_is_free_before_submit_result_is_in_a_block() {
    // One slot; the second task is started ahead while the first runs.
    let h = Harness::start(
        sleeping(
            100,
            ExecutorConfig {
                max_concurrent: 1,
                ..config()
            },
        ),
        manual,
    );
    let first = post(&h, b"first").await;
    let second = post(&h, b"second").await;
    h.run_reaches("the first run", first, RunState::Running)
        .await;
    // Both start_task calls are in the pool (the second was started ahead).
    within("both starts pooled", async {
        while h.chain.pool_len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The starts go into a block; the first run ends and its result is sent.
    h.chain.produce_block();
    h.run_reaches("the first run done", first, RunState::Completed)
        .await;
    // The second run holds the slot while the first's submit_result waits
    // for a block: no block has been built since the starts'.
    h.run_reaches("the second run", second, RunState::Running)
        .await;
    assert_eq!(best_status(&h.chain, first), TaskStatus::Executing);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", first), 0);
    within("the first result pooled", async {
        while h.chain.pool_len() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for id in [first, second] {
        assert!(matches!(
            drive_to_done(&h, id).await,
            TaskOutcome::Submitted { .. }
        ));
        assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    }
    assert_eq!(h.sidecar.sidecar.max_concurrent_runs(), 1);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

/// A submitter that holds `start_task` back until the test lets it go, so
/// the test can put another transaction ahead of it in the pool.
fn gated_starts(
    gate: std::sync::Arc<tokio::sync::Semaphore>,
) -> impl FnOnce(DevSubmitter) -> tower::util::BoxCloneSyncService<MarketCall, Pooled, SubmitError>
{
    move |sub| {
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |call: MarketCall| {
            let sub = sub.clone();
            let gate = gate.clone();
            async move {
                if matches!(call, MarketCall::StartTask { .. }) {
                    let _ = gate.acquire().await.map(|p| p.forget());
                }
                sub.oneshot(call).await
            }
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_the_chain_refuses_cancels_the_run_and_nothing_is_submitted() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let chain = chain_with(manual);
    let h = Harness::start_on(chain, sleeping(2_000, config()), gated_starts(gate.clone()));
    let id = post(&h, b"a").await;
    // Lane 0 work enters the pool ahead of our start_task: in the block they
    // share, it is open before the start is applied, which the chain then
    // refuses (`Lane0Priority`).
    let lane0 = send(&h.requester, create(Lane::Lane0, "video-render")).await;
    gate.add_permits(1);
    h.run_reaches("the optimistic run", id, RunState::Running)
        .await;
    let block = h.chain.produce_block();
    lane0.await.expect("lane 0 created");
    let refused = h
        .chain
        .extrinsics()
        .into_iter()
        .find(|x| x.block == block.number && x.call.name() == "start_task")
        .expect("start_task in the block");
    assert!(
        matches!(&refused.result, Err(e) if e.market_error() == Some(nsn_lane1::chain::MarketError::Lane0Priority)),
        "{refused:?}"
    );
    // The run is cancelled at the sidecar, well before its 2 s.
    h.run_reaches("the run cancelled", id, RunState::Cancelled)
        .await;
    // The task waits for Lane 0; the chain's hook fails it in the next
    // block while Lane 0 is open (the pallet's rule, and its slash).
    h.chain.finalize_to(block.number);
    let outcome = drive_to_done(&h, id).await;
    assert!(
        matches!(outcome, TaskOutcome::AlreadyResolved { .. }),
        "{outcome:?}"
    );
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 0);
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_chain_fails_during_its_run_is_cancelled_at_the_sidecar() {
    let h = Harness::start(sleeping(3_000, config()), |c| {
        c.block_mode = BlockMode::Interval(Duration::from_millis(20));
        c.finality_lag = Some(2);
    });
    let (id, _) = h.post("sleep", b"x").await;
    h.run_reaches("run", id, RunState::Running).await;
    // The requester withdraws the task (no slash: `Other`).
    ok(
        &h.requester,
        MarketCall::FailTask {
            task_id: id,
            reason: nsn_lane1::task::FailReason::Other,
        },
    )
    .await;
    h.run_reaches("the run cancelled", id, RunState::Cancelled)
        .await;
    match h.done(id).await {
        TaskOutcome::AlreadyResolved { status, .. } => {
            assert_eq!(status, Some(TaskStatus::Failed))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_never_runs_more_than_max_concurrent_with_a_finality_lag() {
    let h = Harness::start(
        sleeping(
            100,
            ExecutorConfig {
                max_concurrent: 2,
                ..config()
            },
        ),
        |c| {
            c.block_mode = BlockMode::Interval(Duration::from_millis(20));
            c.finality_lag = Some(2);
        },
    );
    let mut ids = Vec::new();
    for i in 0..8u8 {
        ids.push(h.post("sleep", &[i]).await.0);
    }
    for id in ids {
        assert!(matches!(h.done(id).await, TaskOutcome::Submitted { .. }));
        assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
        assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    }
    // Counted by the sidecar itself: the limit was reached, never passed.
    assert_eq!(h.sidecar.sidecar.max_concurrent_runs(), 2);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}
