//! The node's stake: never slashed for what is not its fault, no call sent
//! twice. Each test makes a fault happen — Lane 0 work at the wrong moment,
//! a task the sidecar cannot run, a sidecar killed or mute, Lane 0 work the
//! node never saw created — asserts that it happened, and counts from the
//! chain's own records what the node sent and what it was slashed.
#![cfg(feature = "dev")]

mod support;

use std::time::Duration;

use nsn_lane1::chain::dev::BlockMode;
use nsn_lane1::chain::{MarketCall, SubmitExt};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::lifecycle::TaskOutcome;
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::Parameters;
use nsn_lane1::sidecar::server::RunState;
use nsn_lane1::task::{
    AccountId, FailReason, Lane, ModelId, Priority, RunId, TaskId, TaskStatus, UNIT,
};
use support::*;

const BOB: AccountId = AccountId::BOB;

fn config(sleep_ms: u64) -> ExecutorConfig {
    let mut config = ExecutorConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ExecutorConfig::default()
    };
    config.model_parameters.insert(
        ModelId::new("sleep").expect("model id"),
        Parameters::json(&serde_json::json!({ "duration_ms": sleep_ms })),
    );
    config
}

/// Blocks by hand, finality two behind, validators attesting (a result
/// left unattested is rejected — and its executor slashed — by the pallet's
/// verification deadline, which the blocks built here could reach).
fn manual(c: &mut nsn_lane1::chain::dev::DevConfig) {
    c.block_mode = BlockMode::Manual;
    c.finality_lag = Some(2);
    c.auto_attest = Some(90);
}

fn interval(c: &mut nsn_lane1::chain::dev::DevConfig) {
    c.block_mode = BlockMode::Interval(Duration::from_millis(20));
    c.finality_lag = Some(2);
}

/// In manual mode: pools `calls` (in order), builds one block holding them,
/// finalizes it, and returns their inclusions.
async fn in_one_final_block(
    h: &Harness,
    calls: Vec<MarketCall>,
) -> Vec<nsn_lane1::chain::Inclusion> {
    let mut pooled = Vec::new();
    for call in calls {
        pooled.push(send(&h.requester, call).await);
    }
    let block = h.chain.produce_block();
    let mut included = Vec::new();
    for p in pooled {
        included.push(p.await.expect("included"));
    }
    h.chain.finalize_to(block.number);
    included
}

/// In manual mode: a `sleep` task, created and assigned, final.
async fn post_manual(h: &Harness, input: &[u8]) -> TaskId {
    let cid = h
        .sidecar
        .sidecar
        .store()
        .put(input.to_vec())
        .expect("input");
    let created = in_one_final_block(h, vec![lane1_task("sleep", &cid)]).await;
    let id = created_id(&created[0]);
    in_one_final_block(h, vec![MarketCall::AcceptAssignment { task_id: id }]).await;
    id
}

/// Waits (yielding) until `cond` holds, at most 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane0_work_while_submit_result_is_pooled_leaves_the_result_standing() {
    let h = Harness::start(config(50), manual);
    let id = post_manual(&h, b"a").await;
    h.run_reaches("the run", id, RunState::Completed).await;
    // The start goes into a block; then the result is sent, and waits.
    let start = h.chain.produce_block();
    h.chain.finalize_to(start.number);
    until("submit_result pooled", || h.chain.pool_len() == 1).await;
    // Lane 0 work arrives while the result is in the pool.
    let lane0 = send(&h.requester, create(Lane::Lane0, "video-render")).await;
    let block = h.chain.produce_block();
    lane0.await.expect("lane 0 created");
    h.chain.finalize_to(block.number + 1);
    // The node saw it (Lane 1 is held), and the hook ran with it open.
    until("lane 1 held", || h.node.preemptor.is_held(Lane::Lane1)).await;
    match h.done(id).await {
        TaskOutcome::Submitted { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        h.status(id),
        TaskStatus::Submitted | TaskStatus::PendingVerification | TaskStatus::Verified
    ));
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    assert_eq!(
        rule_slashes(&h.chain, BOB),
        0,
        "a submitted task is not preempted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane0_work_opened_and_settled_in_one_block_leaves_the_task_to_run_again() {
    let h = Harness::start(config(1_500), manual);
    let id = post_manual(&h, b"a").await;
    h.run_reaches("the run", id, RunState::Running).await;
    let start = h.chain.produce_block();
    h.chain.finalize_to(start.number);
    assert_eq!(h.status(id), TaskStatus::Executing);
    // Lane 0 work is created and taken in one block (its ids are known in
    // advance: the next task id): the next block's hook finds none open.
    let lane0_id = TaskId(h.chain.with_market(|m| m.next_task_id()));
    in_one_final_block(
        &h,
        vec![
            create(Lane::Lane0, "video-render"),
            MarketCall::AcceptAssignment { task_id: lane0_id },
        ],
    )
    .await;
    // The node yields the GPU at once: the run is cancelled.
    h.run_reaches("the run cancelled for lane 0", id, RunState::Cancelled)
        .await;
    // Lane 0 settled, the task is still ours (Executing): it runs again and
    // its result goes out — no `fail_task(Preempted)`, no slash.
    let outcome = {
        let done = tokio::spawn({
            let board = h.node.board.clone();
            async move { board.wait_done(id).await }
        });
        within("the task to end", async {
            loop {
                let b = h.chain.produce_block();
                h.chain.finalize_to(b.number);
                if done.is_finished() {
                    return done.await.expect("board");
                }
                tokio::task::yield_now().await;
            }
        })
        .await
    };
    assert!(
        matches!(outcome, TaskOutcome::Submitted { .. }),
        "{outcome:?}"
    );
    // The re-run went out under a run id of its own, and completed.
    assert_eq!(
        h.sidecar.sidecar.runs_of(id),
        vec![
            (RunId::first(id), RunState::Cancelled),
            (RunId::first(id).next(), RunState::Completed)
        ]
    );
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    assert_eq!(
        rule_slashes(&h.chain, BOB),
        0,
        "{:?} {:?}",
        h.chain.with_market(|m| m.slashes(&BOB)),
        h.chain.extrinsics()
    );
    let report = h.node.stop().await.expect("stops");
    assert_eq!((report.preempted, report.submitted), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_the_sidecar_cannot_run_are_failed_as_invalid_input_without_a_slash() {
    let h = Harness::start(config(10), |_| {});
    // A model registered on chain that the sidecar does not serve.
    ok(
        &h.chain.sudo(),
        MarketCall::RegisterRenderer {
            renderer_id: b"ghost".to_vec(),
            lane: Lane::Lane1,
            deterministic: true,
            max_latency_ms: 1_000,
            vram_required_mb: 0,
        },
    )
    .await;
    let (unknown, _) = h.post("ghost", b"x").await;
    // An input the sidecar does not have.
    let missing = {
        let call = MarketCall::CreateTaskIntent {
            lane: Lane::Lane1,
            priority: Priority::Normal,
            model_requirements: b"sha256".to_vec(),
            input_cid: nsn_lane1::sidecar::store::BlobStore::cid_of(b"never stored")
                .as_bytes()
                .to_vec(),
            compute_budget: 0,
            deadline_blocks: 1_000,
            escrow_amount: UNIT,
        };
        let id = created_id(&ok(&h.requester, call).await);
        ok(&h.requester, MarketCall::AcceptAssignment { task_id: id }).await;
        id
    };
    // An input the model refuses: `uppercase` takes UTF-8 text.
    let (invalid, _) = h.post("uppercase", &[0xff, 0xfe, 0x00]).await;
    for id in [unknown, missing, invalid] {
        match h.done(id).await {
            TaskOutcome::Failed { reason, .. } => {
                assert_eq!(reason, FailReason::InvalidInput, "task {id}")
            }
            other => panic!("task {id}: {other:?}"),
        }
        assert_eq!(h.status(id), TaskStatus::Failed);
        assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 1);
    }
    // The model the sidecar does not serve was never started.
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", unknown), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_mid_run_and_restarted_costs_neither_the_task_nor_the_stake() {
    let mut h = Harness::start(config(400), interval);
    let (id, _) = h.post("sleep", b"a").await;
    h.run_reaches("the run", id, RunState::Running).await;
    let addr = h.sidecar.addr;
    h.sidecar.kill();
    // It comes back on the same address (with its input: a sidecar keeps
    // its store across restarts).
    let restarted = TestSidecar::start_at(addr);
    restarted.sidecar.store().put(b"a".to_vec()).expect("input");
    let killed = std::mem::replace(&mut h.sidecar, restarted);
    // The killed one never finished the run.
    assert_eq!(
        killed.sidecar.state(&id.to_string()),
        Some(RunState::Running)
    );
    let outcome = within_secs(30, h.node.board.wait_done(id)).await;
    assert!(
        matches!(outcome, TaskOutcome::Submitted { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        h.sidecar.sidecar.runs_of(id).last().map(|r| r.1),
        Some(RunState::Completed),
        "the restarted sidecar ran it"
    );
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 0);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_never_answers_frees_the_slot_within_cancel_wait() {
    // A sidecar that takes connections and never says a word.
    let mute = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = mute.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = mute.accept().await {
            held.push(socket);
        }
    });
    let chain = chain();
    let mut sidecar_config =
        nsn_lane1::sidecar::client::SidecarConfig::new(format!("http://{addr}"));
    sidecar_config.cancel_wait = Duration::from_millis(500);
    let sidecar =
        nsn_lane1::sidecar::client::SidecarClient::connect_lazy(sidecar_config).expect("client");
    let node = Node::spawn(
        ExecutorConfig {
            shutdown_grace: Duration::from_millis(100),
            ..config(10)
        },
        // Models not asked of the sidecar (it would not answer).
        NodeParts::dev(&chain, BOB, sidecar).models([ModelId::new("noop").expect("id")].into()),
    );
    within("the node follows", node.following()).await;
    let requester = chain.submitter(AccountId::ALICE);
    let id = created_id(&ok(&requester, create(Lane::Lane1, "noop")).await);
    ok(&requester, MarketCall::AcceptAssignment { task_id: id }).await;
    // Its start goes out and the run is sent to the mute sidecar.
    until("started", || {
        chain_status(&chain, id) == TaskStatus::Executing
    })
    .await;
    let asked = tokio::time::Instant::now();
    let report = within_secs(5, node.stop()).await.expect("stops");
    // Grace (100 ms), then a cancel nobody confirms: given up after
    // cancel_wait (500 ms), the slot freed and the shutdown done.
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(report.preempted, 1, "{report:?}");
    assert_eq!(
        chain_status(&chain, id),
        TaskStatus::Executing,
        "left for the next start"
    );
    assert_eq!(own_slashes(&chain, BOB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane0_work_created_before_the_node_started_does_not_stop_lane1_for_good() {
    let chain = chain();
    let requester = chain.submitter(AccountId::ALICE);
    // Open Lane 0 work the node's listener will never see created.
    let lane0 = created_id(&ok(&requester, create(Lane::Lane0, "video-render")).await);
    let h = Harness::start_on(chain, config(10), |s| s);
    within("the node follows", h.node.following()).await;
    until("lane 1 held for the open lane 0 work", || {
        h.node.preemptor.is_held(Lane::Lane1)
    })
    .await;
    // Lane 0 is taken (by this node's own Lane 0 side: Bob serves both).
    ok(
        &h.requester,
        MarketCall::AcceptAssignment { task_id: lane0 },
    )
    .await;
    // Lane 1 intake resumes.
    let (id, _) = h.post("noop", b"after").await;
    match h.done(id).await {
        TaskOutcome::Submitted { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(!h.node.preemptor.is_held(Lane::Lane1));
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_lane0_bursts_with_a_finality_lag_no_call_is_sent_twice() {
    let h = Harness::start(
        ExecutorConfig {
            max_concurrent: 4,
            ..config(30)
        },
        |c| {
            interval(c);
            // The hook slashes each Lane 1 task it preempts (the pallet's
            // rule): Bob stakes enough for every burst.
            c.genesis.executors = vec![(BOB, 900_000 * UNIT, vec![Lane::Lane0, Lane::Lane1])];
        },
    );
    let lane0_side = h.chain.submitter(BOB);
    let mut ids = Vec::new();
    let mut lane0 = Vec::new();
    for i in 0..200u32 {
        if i % 25 == 12 {
            // A burst: Lane 0 work, open for a few blocks, then taken and
            // served by the node's Lane 0 side.
            let l0 = created_id(&ok(&h.requester, create(Lane::Lane0, "video-render")).await);
            lane0.push(l0);
            ok(&h.requester, MarketCall::AcceptAssignment { task_id: l0 }).await;
            let out = nsn_lane1::sidecar::store::BlobStore::cid_of(b"frame");
            as_node(&h, &lane0_side, MarketCall::StartTask { task_id: l0 }).await;
            as_node(
                &h,
                &lane0_side,
                MarketCall::SubmitResult {
                    task_id: l0,
                    output_cid: out.as_bytes().to_vec(),
                    attestation_cid: Some(out.as_bytes().to_vec()),
                },
            )
            .await;
        }
        let input = format!("task {i}").into_bytes();
        let cid = h.sidecar.sidecar.store().put(input).expect("input");
        let call = lane1_task_due("sleep", &cid, 10_000);
        let id = created_id(&ok(&h.requester, call).await);
        // Lane 1 cannot be assigned while Lane 0 is open; ask again later.
        let assigned = h
            .requester
            .clone()
            .submit(MarketCall::AcceptAssignment { task_id: id })
            .await;
        if assigned.is_ok() {
            ids.push(id);
        }
    }
    assert!(ids.len() > 150, "most tasks assigned: {}", ids.len());
    for id in &ids {
        within_secs(60, h.node.board.wait_done(*id)).await;
    }
    // The listener has handled every finalized block (so its metrics are
    // complete) before the node stops.
    let last = h.chain.finalized_number();
    within("the last block handled", async {
        while h.metrics.handled_block.with(&[]).get() < i64::from(last) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let report = h.node.stop().await.expect("stops");
    // The bursts did preempt work (the chain's hook, or the node yielding).
    let hook = rule_slashes(&h.chain, BOB);
    assert!(
        report.preempted + u64::from(hook) > 0,
        "{report:?}, hook slashes {hook}"
    );
    for id in &ids {
        for call in ["start_task", "submit_result", "fail_task"] {
            let n = calls_on_chain(&h.chain, BOB, call, *id);
            assert!(n <= 1, "task {id}: {n} × {call}");
        }
    }
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    // The node's slash metric saw the hook's slashes of its tasks.
    let counted = h.metrics.slashes.with(&["preemption_hook"]).get();
    let by_hook = h.chain.with_market(|m| {
        m.slashes(&BOB)
            .get(&nsn_lane1::chain::dev::SlashCause::PreemptionHook)
            .copied()
            .unwrap_or(0)
    });
    assert_eq!(counted, u64::from(by_hook));
    assert_eq!(h.metrics.slashes.with(&["own_fail_task"]).get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_does_not_send_again_a_start_that_a_block_not_yet_final_holds() {
    use nsn_lane1::node::{Node, NodeParts};
    let h = Harness::start(config(60_000), manual);
    let id = post_manual(&h, b"a").await;
    // The node pools its start and begins the run; a best block takes the
    // start, finality does not yet.
    within(
        "the run",
        h.sidecar.sidecar.wait_for(
            &id.to_string(),
            nsn_lane1::sidecar::server::RunState::Running,
        ),
    )
    .await;
    until("start_task pooled", || h.chain.pool_len() > 0).await;
    h.chain.produce_block();
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert!(h.chain.finalized_number() < h.chain.head_number());

    // The node dies, and a new one (its record of sent calls gone) starts.
    let Harness {
        chain,
        sidecar,
        node,
        ..
    } = h;
    node.kill().await;
    within(
        "the orphaned run ends",
        sidecar.sidecar.wait_for(
            &id.to_string(),
            nsn_lane1::sidecar::server::RunState::Cancelled,
        ),
    )
    .await;
    let second = Node::spawn(
        config(60_000),
        NodeParts::dev(&chain, BOB, sidecar.client()),
    );
    // It runs the task again, on the start the best block holds.
    within(
        "the run again",
        sidecar.sidecar.wait_for(
            &id.to_string(),
            nsn_lane1::sidecar::server::RunState::Running,
        ),
    )
    .await;
    let last = chain.produce_block();
    chain.finalize_to(last.number);
    assert_eq!(
        calls_on_chain(&chain, BOB, "start_task", id),
        1,
        "start_task sent once for the assignment"
    );
    assert_eq!(chain_status(&chain, id), TaskStatus::Executing);
    second.kill().await;
}

/// Loses the answer to the first `start_task` (as a dropped connection
/// does) while the transaction itself stays in the pool, held there for
/// `hold` blocks before it may land.
#[derive(Clone)]
struct LosesFirstStartAnswer {
    inner: nsn_lane1::chain::dev::DevSubmitter,
    chain: nsn_lane1::chain::dev::DevChain,
    hold: u32,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tower::Service<MarketCall> for LosesFirstStartAnswer {
    type Response = nsn_lane1::chain::Pooled;
    type Error = nsn_lane1::chain::SubmitError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        use std::sync::atomic::Ordering;
        let is_start = matches!(call, MarketCall::StartTask { .. });
        let pooled = self.inner.call(call);
        let (chain, hold, lost) = (self.chain.clone(), self.hold, self.lost.clone());
        Box::pin(async move {
            let pooled = pooled.await?;
            if !is_start || lost.swap(true, Ordering::SeqCst) {
                return Ok(pooled);
            }
            let held = chain.hold_pooled(0, hold, |_, c| matches!(c, MarketCall::StartTask { .. }));
            assert!(held.is_some(), "the start is held in the pool");
            Ok(nsn_lane1::chain::Pooled::new(pooled.nonce(), async {
                Err(nsn_lane1::chain::SubmitError::Connection(
                    "connection reset; answer lost".into(),
                ))
            }))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_answer_was_lost_is_not_sent_again_while_it_can_still_land() {
    let chain = chain_with(|c| {
        interval(c);
        c.auto_attest = Some(90);
    });
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = Harness::start_on(chain.clone(), config(50), |inner| LosesFirstStartAnswer {
        inner,
        chain,
        // Long enough (30 blocks of 20 ms) for a retry to go out first.
        hold: 30,
        lost: lost.clone(),
    });
    let id = h.post_until_verified("sleep", b"a").await;
    assert!(
        lost.load(std::sync::atomic::Ordering::SeqCst),
        "the start's answer was lost"
    );
    assert_eq!(
        calls_on_chain(&h.chain, BOB, "start_task", id),
        1,
        "start_task sent once for the assignment"
    );
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

/// Opens Lane 0 work just before the node's first `start_task` and takes
/// it just after (the requester's calls around it in the pool), so that the
/// chain refuses that start with `Lane0Priority` in a block after which no
/// Lane 0 work is open (the chain's preemption hook has nothing to do).
#[derive(Clone)]
struct Lane0AroundFirstStart {
    inner: nsn_lane1::chain::dev::DevSubmitter,
    requester: nsn_lane1::chain::dev::DevSubmitter,
    opened: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl tower::Service<MarketCall> for Lane0AroundFirstStart {
    type Response = nsn_lane1::chain::Pooled;
    type Error = nsn_lane1::chain::SubmitError;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        use std::sync::atomic::Ordering;
        let MarketCall::StartTask { task_id } = call else {
            return tower::Service::call(&mut self.inner, call);
        };
        if self.opened.swap(true, Ordering::SeqCst) {
            return tower::Service::call(&mut self.inner, call);
        }
        let mut pool = |call| {
            tower::Service::call(&mut self.requester, call)
                .into_inner()
                .expect("pooled")
        };
        // The Lane 0 task is the next one created: its id follows ours.
        let _created = pool(create(Lane::Lane0, "video-render"));
        let start = tower::Service::call(&mut self.inner, call);
        let _taken = pool(MarketCall::AcceptAssignment {
            task_id: nsn_lane1::task::TaskId(task_id.0 + 1),
        });
        start
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_refused_for_lane0_work_is_sent_again_once_that_work_is_settled() {
    let chain = chain_with(|c| {
        interval(c);
        c.auto_attest = Some(90);
    });
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = Harness::start_on(chain.clone(), config(50), |inner| Lane0AroundFirstStart {
        inner,
        requester: chain.submitter(AccountId::ALICE),
        opened: opened.clone(),
    });
    let id = h.post_until_verified("sleep", b"a").await;
    let starts: Vec<bool> = h
        .chain
        .extrinsics()
        .iter()
        .filter(|x| x.call == MarketCall::StartTask { task_id: id })
        .map(|x| x.result.is_ok())
        .collect();
    assert_eq!(
        starts,
        [false, true],
        "refused once for lane 0, then sent again and taken"
    );
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    assert_eq!(
        rule_slashes(&h.chain, BOB),
        0,
        "the hook never found lane 0 work open"
    );
}

/// The chain-wide cap on results waiting for verification fills under load:
/// a `submit_result` refused with `TooManyPendingVerifications` had no
/// effect, and is sent again once the cap has room — the task is verified,
/// not left assigned (where the hook would slash it at the next Lane 0
/// burst) nor given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_refused_for_the_pending_verification_cap_is_submitted_once_it_has_room() {
    use nsn_lane1::chain::dev::{DevGenesis, Origin};
    use nsn_lane1::chain::{DispatchError, MarketError};
    let mut genesis = DevGenesis::development();
    genesis.params.max_pending_verifications = 1;
    let chain = chain_with(|c| {
        c.genesis = genesis;
        c.block_mode = BlockMode::Interval(Duration::from_millis(20));
        c.finality_lag = Some(2);
        // Validators attest by hand below.
        c.auto_attest = None;
    });
    let h = Harness::start_on(chain, config(100), |s| s);
    let attest = |id: TaskId| {
        let chain = h.chain.clone();
        async move {
            for v in [AccountId::DAVE, AccountId::EVE] {
                ok(
                    &chain.submitter(v),
                    MarketCall::SubmitAttestation {
                        task_id: id,
                        score: 90,
                        attestation_cid: None,
                    },
                )
                .await;
            }
        }
    };
    // A waits for verification: the cap (1) is full.
    let (a, _) = h.post("sha256", b"a").await;
    assert!(matches!(h.done(a).await, TaskOutcome::Submitted { .. }));
    // B's result is refused by the cap: the fault happened.
    let (b, _) = h.post("sha256", b"b").await;
    let refused = |chain: &nsn_lane1::chain::dev::DevChain| {
        chain.extrinsics().iter().any(|x| {
            x.origin == Origin::Signed(BOB)
                && x.call.name() == "submit_result"
                && x.call.task_id() == Some(b)
                && x.result
                    == Err(DispatchError::from(
                        MarketError::TooManyPendingVerifications,
                    ))
        })
    };
    within("the cap to refuse B's result", async {
        while !refused(&h.chain) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // A is verified: the cap has room, and B's result goes out.
    attest(a).await;
    let outcome = within_secs(30, h.node.board.wait_done(b)).await;
    assert!(
        matches!(outcome, TaskOutcome::Submitted { .. }),
        "{outcome:?}"
    );
    attest(b).await;
    assert_eq!(h.status(b), TaskStatus::Verified);
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", b), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

/// A requester may fail a running task itself with `ExecutorFailed`, and
/// the pallet slashes the executor for it. Not a fault of the node's: it is
/// counted under a cause of its own, apart from the node's own calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requesters_own_fail_task_is_counted_as_the_requesters() {
    let h = Harness::start(config(60_000), interval);
    let (id, _) = h.post("sleep", b"r").await;
    h.run_reaches("the run", id, RunState::Running).await;
    ok(
        &h.requester,
        MarketCall::FailTask {
            task_id: id,
            reason: FailReason::ExecutorFailed,
        },
    )
    .await;
    // The run stops: the chain failed the task.
    h.run_reaches("the run cancelled", id, RunState::Cancelled)
        .await;
    let scrape = || h.metrics.registry.render();
    within("the slash counted", async {
        while !scrape().contains("lane1_slashes_total{cause=\"requester\"} 1") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        scrape().contains("lane1_slashes_total{cause=\"own_fail_task\"} 0"),
        "{}",
        scrape()
    );
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 0);
}
