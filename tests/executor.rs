//! The whole node — listener, stack, executor — on the dev chain with a real
//! sidecar on loopback.
#![cfg(feature = "dev")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use nsn_lane1::board::{ExecutorState, FailCause, TaskOutcome};
use nsn_lane1::chain::dev::{BlockMode, Market};
use nsn_lane1::chain::{ChainPort, MarketCall, MarketEvent, Pooled, SubmitError};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::layer::preempt::PreemptReason;
use nsn_lane1::sidecar::client::Blame;
use nsn_lane1::sidecar::server::RunState;
use nsn_lane1::task::{AccountId, FailReason, Lane, RunId, TaskStatus, UNIT};
use support::*;
use tower::ServiceExt;

fn config() -> ExecutorConfig {
    ExecutorConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ExecutorConfig::default()
    }
}

/// Waits for the board to show the task in `state`.
async fn wait_state(h: &Harness, id: TaskId, want: fn(&ExecutorState) -> bool) {
    within(
        "task state",
        h.node
            .board
            .wait_until(|states| states.get(&id).is_some_and(want)),
    )
    .await;
}

#[tokio::test]
async fn full_lifecycle_to_verified_with_payment() {
    let h = Harness::start(config(), |c| c.auto_attest = Some(90));
    let mut blocks = h.chain.finalized_blocks(None);
    let bob_before = h.chain.with_market(|m| m.account(&AccountId::BOB).free);
    let (id, executor) = h.post("sha256", b"pay me").await;
    assert_eq!(executor, AccountId::BOB);

    let outcome = h.done(id).await;
    let TaskOutcome::Submitted { output_cid, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    // The output on chain is the sidecar's, and hashes back to its bytes.
    let bytes = h.sidecar.sidecar.store().get(output_cid).unwrap().unwrap();
    assert_eq!(
        nsn_lane1::sidecar::store::BlobStore::cid_of(&bytes),
        *output_cid
    );

    // Validators attest in the following blocks; the chain pays 70 %.
    let verified = within("TaskVerified", async {
        while let Some(Ok(block)) = blocks.next().await {
            for r in block.events.iter() {
                if let MarketEvent::TaskVerified {
                    task_id, payment, ..
                } = r.event
                    && task_id == id
                {
                    return payment;
                }
            }
        }
        panic!("stream ended");
    })
    .await;
    let (to_executor, _, _) = Market::payment_split(UNIT);
    assert_eq!(verified, to_executor);
    assert_eq!(h.status(id), TaskStatus::Verified);
    assert_eq!(
        h.chain.with_market(|m| m.account(&AccountId::BOB).free),
        bob_before + to_executor
    );
    let report = h.node.stop().await.unwrap();
    assert_eq!(report.submitted, 1);
    assert_eq!(report.failed, 0);
}

#[tokio::test]
async fn model_failure_fails_the_task_as_executor_failed() {
    let h = Harness::start(config(), |_| {});
    let stake = h
        .chain
        .with_market(|m| m.executor(&AccountId::BOB).unwrap().stake);
    let (id, _) = h.post("fail", b"doomed").await;
    match h.done(id).await {
        TaskOutcome::Failed { reason, cause, .. } => {
            assert_eq!(reason, FailReason::ExecutorFailed);
            // The evidence is typed: the sidecar's verdict blames the model.
            match cause {
                FailCause::Run { blame, message } => {
                    assert_eq!(blame, Blame::Model);
                    assert!(message.contains("the fail model always fails"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.status(id), TaskStatus::Failed);
    assert_eq!(
        h.chain
            .with_market(|m| m.executor(&AccountId::BOB).unwrap().stake),
        stake - 5 * UNIT,
        "ExecutorFailed slashes"
    );
}

/// A submitter that loses the answer to the first `submit_result` after the
/// chain included it, as a dropped connection would.
#[tokio::test]
async fn a_lost_answer_is_retried_without_submitting_twice() {
    let chain = chain();
    let lost = Arc::new(AtomicU32::new(0));
    let counter = lost.clone();
    let h = Harness::start_on(
        chain,
        ExecutorConfig {
            submit_retry_attempts: 2,
            retry_base: Duration::from_millis(5),
            ..config()
        },
        move |sub| {
            tower::service_fn(move |call: MarketCall| {
                let sub = sub.clone();
                let counter = counter.clone();
                async move {
                    let is_submit = matches!(call, MarketCall::SubmitResult { .. });
                    let pooled = sub.oneshot(call).await?;
                    if !is_submit {
                        return Ok(pooled);
                    }
                    // Wait for the block, then lose the answer (once).
                    let included = pooled.await;
                    if included.is_ok() && counter.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(SubmitError::Connection("connection reset".into()));
                    }
                    Ok(Pooled::ready(included))
                }
            })
        },
    );
    let mut blocks = h.chain.finalized_blocks(Some(0));
    let (id, _) = h.post("uppercase", b"once").await;
    match h.done(id).await {
        TaskOutcome::Submitted { block, .. } => {
            assert_eq!(block, None, "the retry found the result already on chain")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(lost.load(Ordering::SeqCst), 1);
    h.chain.shutdown();
    let mut submitted = 0;
    while let Some(Ok(b)) = blocks.next().await {
        submitted += b
            .events
            .iter()
            .filter(|r| matches!(r.event, MarketEvent::TaskSubmitted { .. }))
            .count();
    }
    assert_eq!(submitted, 1, "exactly one submit_result reached the chain");
}

#[tokio::test]
async fn a_chain_call_that_keeps_failing_is_tried_until_the_deadline_never_given_up() {
    // Every submit_result fails for good: the task cannot be finished. It is
    // not given up while it is ours (the chain's hook would slash it at the
    // next Lane 0 burst): tried again on a growing backoff, and at its
    // deadline given back with DeadlineExceeded, which slashes no one.
    let chain = chain_with(|c| {
        c.block_mode = BlockMode::Interval(Duration::from_millis(20));
        c.finality_lag = Some(2);
    });
    let submits = Arc::new(AtomicU32::new(0));
    let counted = submits.clone();
    let h = Harness::start_on(chain, config(), move |sub| {
        tower::service_fn(move |call: MarketCall| {
            let sub = sub.clone();
            let counted = counted.clone();
            async move {
                if matches!(call, MarketCall::SubmitResult { .. }) {
                    counted.fetch_add(1, Ordering::Relaxed);
                    return Err(SubmitError::Closed);
                }
                sub.oneshot(call).await
            }
        })
    });
    let cid = h.sidecar.sidecar.store().put(b"x".to_vec()).unwrap();
    let mut call = lane1_task("noop", &cid);
    if let MarketCall::CreateTaskIntent {
        deadline_blocks, ..
    } = &mut call
    {
        *deadline_blocks = 60;
    }
    let id = created_id(&ok(&h.requester, call).await);
    ok(&h.requester, MarketCall::AcceptAssignment { task_id: id }).await;
    let outcome = within_secs(30, h.node.board.wait_done(id)).await;
    match outcome {
        TaskOutcome::Failed { reason, .. } => assert_eq!(reason, FailReason::DeadlineExceeded),
        other => panic!("{other:?}"),
    }
    assert!(
        submits.load(Ordering::Relaxed) >= 3,
        "tried again and again: {}",
        submits.load(Ordering::Relaxed)
    );
    assert_eq!(calls_on_chain(&h.chain, AccountId::BOB, "fail_task", id), 1);
    assert_eq!(own_slashes(&h.chain, AccountId::BOB), 0);
    let report = h.node.stop().await.unwrap();
    assert_eq!(report.errors, 0, "nothing given up");
    assert_eq!(report.submitted, 0);
}

#[tokio::test]
async fn lane0_arrival_preempts_running_lane1_work() {
    let h = Harness::start(config(), |_| {});
    // Chain tasks carry no parameters: `sleep` runs its default 1 s.
    let (id, _) = h.post("sleep", b"x").await;
    h.run_reaches("run to start", id, RunState::Running).await;
    assert_eq!(h.status(id), TaskStatus::Executing);
    ok(&h.requester, create(Lane::Lane0, "video-render")).await;
    // The GPU is freed at once: the run is cancelled at the sidecar.
    h.run_reaches("run cancelled", id, RunState::Cancelled)
        .await;
    // The node reports nothing itself (`fail_task(Preempted)` slashes): the
    // chain's hook decides, in the next block, while Lane 0 is still open.
    wait_state(&h, id, |s| matches!(s, ExecutorState::Queued)).await;
    assert_eq!(h.status(id), TaskStatus::Executing);
    h.chain.produce_block();
    match h.done(id).await {
        TaskOutcome::AlreadyResolved { status, .. } => assert_eq!(status, Some(TaskStatus::Failed)),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls_on_chain(&h.chain, AccountId::BOB, "fail_task", id), 0);
    assert_eq!(
        own_slashes(&h.chain, AccountId::BOB),
        0,
        "no slash of our own doing"
    );
    assert_eq!(
        rule_slashes(&h.chain, AccountId::BOB),
        1,
        "the pallet's hook slashed"
    );
    let report = h.node.stop().await.unwrap();
    assert_eq!((report.preempted, report.failed), (1, 0));
}

#[tokio::test]
async fn a_preempted_task_whose_start_had_not_landed_goes_back_to_the_queue() {
    let h = Harness::start(config(), |c| c.block_mode = BlockMode::Manual);
    // Post by hand in manual mode: each call needs a block.
    let cid = h.sidecar.sidecar.store().put(b"x".to_vec()).unwrap();
    let created = send(&h.requester, lane1_task("sleep", &cid)).await;
    h.chain.produce_block();
    let id = created_id(&created.await.unwrap());
    let assign = send(&h.requester, MarketCall::AcceptAssignment { task_id: id }).await;
    h.chain.produce_block();
    assign.await.unwrap();
    // The executor hears of it and sends start_task, which waits in the
    // pool; the run (`sleep`, 1 s) begins before it lands.
    wait_state(&h, id, |s| matches!(s, ExecutorState::Executing)).await;
    assert_eq!(h.chain.pool_len(), 1, "start_task in the pool");
    h.run_reaches("the optimistic run", id, RunState::Running)
        .await;
    // The node's Lane 0 side preempts before start_task lands.
    assert_eq!(
        h.node
            .preemptor
            .preempt_lane(Lane::Lane1, PreemptReason::Lane0),
        vec![id]
    );
    // No block was built since: the chain still has it assigned, not
    // started, so the task is requeued and runs again. Its start_task is
    // still in the pool: the re-run waits for that one instead of sending a
    // second.
    h.run_reaches("the preempted run cancelled", id, RunState::Cancelled)
        .await;
    // Under a run id of its own: the first one's is spent.
    h.run_reaches("the re-run", RunId::first(id).next(), RunState::Running)
        .await;
    assert_eq!(h.chain.pool_len(), 1, "one start_task in the pool, not two");
    assert_eq!(h.status(id), TaskStatus::Assigned, "start never landed");
    // Blocks go on: the pending start lands, and the requeued task runs to the end.
    let done = tokio::spawn({
        let board = h.node.board.clone();
        async move { board.wait_done(id).await }
    });
    let outcome = within("requeued task to finish", async {
        loop {
            h.chain.produce_block();
            if done.is_finished() {
                return done.await.unwrap();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        matches!(outcome, TaskOutcome::Submitted { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        calls_on_chain(&h.chain, AccountId::BOB, "start_task", id),
        1
    );
    assert_eq!(
        calls_on_chain(&h.chain, AccountId::BOB, "submit_result", id),
        1
    );
    assert_eq!(own_slashes(&h.chain, AccountId::BOB), 0);
    let report = h.node.stop().await.unwrap();
    assert_eq!(
        (report.preempted, report.requeued, report.submitted),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_chain_side_preemption_stops_the_sidecar_task() {
    // The node leaves Lane 0 to the chain: the hook fails the task in the
    // next block, and TaskFailed{Preempted} alone must stop the run.
    let h = Harness::start(
        ExecutorConfig {
            preempt_on_lane0: false,
            ..config()
        },
        |_| {},
    );
    let mut blocks = h.chain.finalized_blocks(None);
    let (id, _) = h.post("sleep", b"x").await;
    h.run_reaches("run to start", id, RunState::Running).await;
    ok(&h.requester, create(Lane::Lane0, "video-render")).await;
    assert_eq!(
        h.sidecar.sidecar.state(&id.to_string()),
        Some(RunState::Running)
    );
    h.chain.produce_block();
    let reason = within("TaskFailed", async {
        while let Some(Ok(b)) = blocks.next().await {
            for r in b.events.iter() {
                if let MarketEvent::TaskFailed { task_id, reason } = r.event
                    && task_id == id
                {
                    return reason;
                }
            }
        }
        panic!("stream ended")
    })
    .await;
    assert_eq!(reason, FailReason::Preempted);
    h.run_reaches("sidecar run cancelled", id, RunState::Cancelled)
        .await;
    match h.done(id).await {
        TaskOutcome::AlreadyResolved { status, .. } => assert_eq!(status, Some(TaskStatus::Failed)),
        other => panic!("{other:?}"),
    }
    assert_eq!(calls_on_chain(&h.chain, AccountId::BOB, "fail_task", id), 0);
    assert_eq!(own_slashes(&h.chain, AccountId::BOB), 0);
    assert_eq!(
        rule_slashes(&h.chain, AccountId::BOB),
        1,
        "the hook's own slash"
    );
}

#[tokio::test]
async fn a_task_assigned_to_another_node_never_runs() {
    let h = Harness::start(config(), |c| {
        c.genesis.executors = vec![
            (AccountId::BOB, 100 * UNIT, vec![Lane::Lane1]),
            (AccountId::CHARLIE, 100 * UNIT, vec![Lane::Lane1]),
        ];
    });
    let mut theirs = Vec::new();
    let mut ours = Vec::new();
    while theirs.len() < 3 || ours.is_empty() {
        let (id, executor) = h.post("noop", b"x").await;
        if executor == AccountId::CHARLIE {
            theirs.push(id);
        } else {
            ours.push(id);
        }
    }
    for id in &ours {
        assert!(matches!(h.done(*id).await, TaskOutcome::Submitted { .. }));
    }
    for id in &theirs {
        assert_eq!(
            h.sidecar.sidecar.state(&id.to_string()),
            None,
            "task {id} ran here"
        );
        assert_eq!(h.node.board.get(*id), None);
        assert_eq!(h.status(*id), TaskStatus::Assigned);
    }
}

#[tokio::test]
async fn a_task_that_runs_too_long_times_out() {
    let h = Harness::start(
        ExecutorConfig {
            execution_timeout: Duration::from_millis(300),
            ..config()
        },
        |_| {},
    );
    let (id, _) = h.post("sleep", b"x").await;
    match h.done(id).await {
        TaskOutcome::Failed { reason, .. } => assert_eq!(reason, FailReason::DeadlineExceeded),
        other => panic!("{other:?}"),
    }
    let state = h.sidecar.sidecar.state(&id.to_string());
    assert!(state.is_some_and(RunState::is_final), "{state:?}");
    assert_eq!(h.status(id), TaskStatus::Failed);
}

#[tokio::test]
async fn shutdown_lets_short_work_finish_and_cancels_the_rest() {
    let h = Harness::start(
        ExecutorConfig {
            max_concurrent: 2,
            shutdown_grace: Duration::from_millis(1500),
            ..config()
        },
        |_| {},
    );
    let (quick, _) = h.post("uppercase", b"quick").await;
    h.done(quick).await;
    // `sleep` with default parameters runs 1 s: within the grace period.
    let (short, _) = h.post("sleep", b"short").await;
    h.run_reaches("short run", short, RunState::Running).await;
    let report = within("graceful stop", h.node.stop()).await.unwrap();
    assert_eq!(report.submitted, 2, "{report:?}");
    assert_eq!(chain_status(&h.chain, short), TaskStatus::Submitted);
}

#[tokio::test]
async fn shutdown_cancels_work_that_outlasts_the_grace_period() {
    let h = Harness::start(
        ExecutorConfig {
            shutdown_grace: Duration::from_millis(100),
            execution_timeout: Duration::from_secs(120),
            ..config()
        },
        |_| {},
    );
    // `sleep` runs its default 1 s: longer than the 100 ms grace.
    let (id, _) = h.post("sleep", b"long").await;
    h.run_reaches("run", id, RunState::Running).await;
    let report = within("stop", h.node.stop()).await.unwrap();
    assert_eq!(report.preempted, 1, "{report:?}");
    assert_eq!(
        h.sidecar.sidecar.state(&id.to_string()),
        Some(RunState::Cancelled)
    );
    // Left assigned for the next start to resume: nothing sent for it.
    assert_eq!(report.failed, 0);
    assert_eq!(chain_status(&h.chain, id), TaskStatus::Executing);
    assert_eq!(calls_on_chain(&h.chain, AccountId::BOB, "fail_task", id), 0);
}

#[tokio::test]
async fn shutdown_can_fail_unfinished_work_instead() {
    let h = Harness::start(
        ExecutorConfig {
            shutdown_grace: Duration::from_millis(100),
            execution_timeout: Duration::from_secs(120),
            fail_unfinished_on_shutdown: true,
            ..config()
        },
        |_| {},
    );
    let (id, _) = h.post("sleep", b"long").await;
    h.run_reaches("run", id, RunState::Running).await;
    let report = within("stop", h.node.stop()).await.unwrap();
    assert_eq!((report.preempted, report.failed), (1, 1), "{report:?}");
    assert_eq!(
        h.sidecar.sidecar.state(&id.to_string()),
        Some(RunState::Cancelled)
    );
    assert_eq!(chain_status(&h.chain, id), TaskStatus::Failed);
    // `Other` refunds the requester and slashes no one.
    assert_eq!(own_slashes(&h.chain, AccountId::BOB), 0);
}

#[tokio::test]
async fn never_more_than_the_limit_in_flight_at_the_sidecar() {
    let h = Harness::start(
        ExecutorConfig {
            max_concurrent: 2,
            ..config()
        },
        |_| {},
    );
    let mut ids = Vec::new();
    for i in 0..6u8 {
        ids.push(h.post("sleep", &[i]).await.0);
    }
    for id in ids {
        assert!(matches!(h.done(id).await, TaskOutcome::Submitted { .. }));
    }
    assert_eq!(h.sidecar.sidecar.max_concurrent_runs(), 2);
}

#[tokio::test]
async fn candidates_are_claimed_only_for_models_the_sidecar_serves() {
    let h = Harness::start(
        ExecutorConfig {
            claim_assignments: true,
            ..config()
        },
        |_| {},
    );
    // A model the chain knows but the sidecar does not serve.
    ok(
        &h.chain.sudo(),
        MarketCall::RegisterRenderer {
            renderer_id: b"llama".to_vec(),
            lane: Lane::Lane1,
            deterministic: true,
            max_latency_ms: 1_000,
            vram_required_mb: 0,
        },
    )
    .await;
    // Candidates created before the listener follows the chain are not seen.
    within("listener to follow", h.node.following()).await;
    let mut blocks = h.chain.finalized_blocks(None);
    let foreign = created_id(&ok(&h.requester, create(Lane::Lane1, "llama")).await);
    let cid = h.sidecar.sidecar.store().put(b"x".to_vec()).unwrap();
    let served = created_id(&ok(&h.requester, lane1_task("sha256", &cid)).await);
    // Nobody but the executor asks for an assignment of `served`.
    assert!(matches!(
        h.done(served).await,
        TaskOutcome::Submitted { .. }
    ));
    h.chain.shutdown();
    let mut assigned = Vec::new();
    while let Some(Ok(b)) = blocks.next().await {
        for r in b.events.iter() {
            if let MarketEvent::TaskAssigned { task_id, .. } = r.event {
                assigned.push(task_id);
            }
        }
    }
    assert_eq!(
        assigned,
        vec![served],
        "only the served model's task was claimed"
    );
    assert_eq!(chain_status(&h.chain, foreign), TaskStatus::Open);
}

/// The value of the sample `series` (name and labels as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_metrics_follow_a_task_through_the_chain_and_the_sidecar() {
    let h = Harness::start(config(), timed);
    h.post_until_verified("sleep", b"{}").await;
    let verified_at = h.chain.finalized_head().await.unwrap().number;
    // Wait for the listener to have handled the block (the metric's own
    // value), then read the rest.
    within("the handled block", async {
        while sample(&h.metrics.registry.render(), "lane1_chain_handled_block")
            .is_none_or(|n| n < f64::from(verified_at))
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let text = h.metrics.registry.render();
    let calls = |call: &str, outcome: &str| {
        sample(
            &text,
            &format!("lane1_chain_calls_total{{call=\"{call}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(calls("start_task", "included"), Some(1.0), "{text}");
    assert_eq!(calls("submit_result", "included"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "lane1_chain_calls_outstanding"), Some(0.0));
    assert!(sample(&text, "lane1_chain_best_block").is_some_and(|n| n >= f64::from(verified_at)));
    // The model ran: its time at the sidecar was counted.
    assert!(
        sample(&text, "lane1_sidecar_busy_seconds_total").is_some_and(|s| s > 0.0),
        "{text}"
    );
    assert!(sample(&text, "lane1_payments_total").is_some_and(|p| p > 0.0));
    assert_eq!(sample(&text, "lane1_tasks_in_flight"), Some(0.0));
}

/// A node builder's layers are on the task's path: every model run passes
/// the execute layer, every chain call the submit layer, and the node's own
/// wiring (listener, record of sent calls, confirmer) is unchanged.
#[tokio::test]
async fn a_node_built_with_layers_of_ones_own_runs_every_task_through_them() {
    use nsn_lane1::node::{Node, NodeParts};
    use nsn_lane1::sidecar::client::ExecuteRequest;
    use tower::util::MapRequestLayer;

    let chain = chain_with(timed);
    let sidecar = TestSidecar::start();
    let runs = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let (r, c) = (runs.clone(), calls.clone());
    let node = Node::builder(
        ExecutorConfig::default(),
        NodeParts::dev(&chain, AccountId::BOB, sidecar.client()),
    )
    .execute_layer(MapRequestLayer::new(move |run: ExecuteRequest| {
        r.fetch_add(1, Ordering::SeqCst);
        run
    }))
    .submit_layer(MapRequestLayer::new(move |call: MarketCall| {
        c.fetch_add(1, Ordering::SeqCst);
        call
    }))
    .submit_layer(tower::load_shed::LoadShedLayer::new())
    .spawn();
    node.following().await;
    let requester = chain.submitter(AccountId::ALICE);
    let mut ids = Vec::new();
    for i in 0..3u32 {
        let input = sidecar
            .sidecar
            .store()
            .put(format!("layered {i}").into_bytes())
            .expect("store");
        let id = created_id(&ok(&requester, lane1_task("sha256", &input)).await);
        ok(&requester, MarketCall::AcceptAssignment { task_id: id }).await;
        ids.push(id);
    }
    for id in &ids {
        until_verified(&chain, *id, 30).await;
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "one run per task, each through the layer"
    );
    // A start and a result per task, each through the submit layer.
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    for id in ids {
        assert_eq!(calls_on_chain(&chain, AccountId::BOB, "start_task", id), 1);
        assert_eq!(
            calls_on_chain(&chain, AccountId::BOB, "submit_result", id),
            1
        );
    }
    node.stop().await.expect("stops");
}
