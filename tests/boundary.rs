//! The sidecar boundary: who can hurt the node there, and what it costs.
//! NSN's deployed sidecar (its words for failures, single-use run ids, a
//! cancel that only marks), another process on the sidecar's port
//! (cancelling our runs, running our next task ids first), a model that
//! fails again and again (the stake breaker). Each test makes its fault
//! happen, asserts that it happened, and counts calls and slashes from the
//! chain's own record. The chain builds a block every 20 ms with finality
//! two blocks behind.
#![cfg(feature = "dev")]

mod support;

use std::time::Duration;

use nsn_lane1::admission::NotReady;
use nsn_lane1::chain::MarketCall;
use nsn_lane1::chain::dev::BlockMode;
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::lifecycle::TaskOutcome;
use nsn_lane1::sidecar::client::{ExecuteRequest, Parameters};
use nsn_lane1::sidecar::server::{RunState, Semantics, SetupFault};
use nsn_lane1::task::{AccountId, FailReason, Lane, ModelId, Priority, RunId, TaskId, UNIT};
use support::*;
use tower::ServiceExt;

const BOB: AccountId = AccountId::BOB;

fn config() -> ExecutorConfig {
    let mut config = ExecutorConfig {
        shutdown_grace: Duration::from_secs(5),
        ..ExecutorConfig::default()
    };
    config.model_parameters.insert(
        ModelId::new("sleep").expect("model id"),
        Parameters::json(&serde_json::json!({ "duration_ms": 300 })),
    );
    config
}

fn timed(c: &mut nsn_lane1::chain::dev::DevConfig) {
    c.block_mode = BlockMode::Interval(Duration::from_millis(20));
    c.finality_lag = Some(2);
    c.auto_attest = Some(90);
}

fn harness(config: ExecutorConfig, semantics: Semantics) -> Harness {
    let h = Harness::start(config, timed);
    h.sidecar.sidecar.set_semantics(semantics);
    h
}

/// `ExecutorFailed` calls of Bob's on chain.
fn executor_failed(h: &Harness) -> usize {
    fail_reasons(h)
        .into_iter()
        .filter(|r| *r == FailReason::ExecutorFailed)
        .count()
}

/// The reasons of every `fail_task` Bob sent, from the chain's blocks.
fn fail_reasons(h: &Harness) -> Vec<FailReason> {
    use nsn_lane1::chain::dev::Origin;
    h.chain
        .extrinsics()
        .iter()
        .filter(|x| x.origin == Origin::Signed(BOB))
        .filter_map(|x| match x.call {
            MarketCall::FailTask { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// Waits (at most 30 s, checking every few milliseconds) until `cond`
/// holds: for states the node shows only in its gauges.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// A task for `model` on `input`, due in `deadline` blocks, assigned.
async fn post_due(h: &Harness, model: &str, input: &[u8], deadline: u32) -> TaskId {
    let cid = h.sidecar.sidecar.store().put(input.to_vec()).unwrap();
    let call = MarketCall::CreateTaskIntent {
        lane: Lane::Lane1,
        priority: Priority::Normal,
        model_requirements: model.as_bytes().to_vec(),
        input_cid: cid.as_bytes().to_vec(),
        compute_budget: 0,
        deadline_blocks: deadline,
        escrow_amount: UNIT,
    };
    let id = created_id(&ok(&h.requester, call).await);
    ok(&h.requester, MarketCall::AcceptAssignment { task_id: id }).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsn_wordings_cost_the_node_nothing() {
    let mut config = config();
    // Parameters NSN's sidecar refuses ("must be a JSON object"): the
    // node's setting for one model, which the sidecar blames on the request.
    config.model_parameters.insert(
        ModelId::new("uppercase").unwrap(),
        Parameters::json(&serde_json::json!([1])),
    );
    let h = harness(config, Semantics::Nsn);
    // Parameters: "Invalid request: parameters must be a JSON object" → the
    // task's fault, InvalidInput.
    let (bad_params, _) = h.post("uppercase", b"text").await;
    match h.done(bad_params).await {
        TaskOutcome::Failed { reason, .. } => assert_eq!(reason, FailReason::InvalidInput),
        other => panic!("{other:?}"),
    }
    // The model failing: "Task execution failed: <stderr>" says nothing of
    // whose fault it is. Held, tried again, and given back at its deadline
    // as DeadlineExceeded — never ExecutorFailed.
    let failing = post_due(&h, "fail", b"x", 120).await;
    within_secs(
        30,
        h.sidecar
            .sidecar
            .wait_for(&RunId::first(failing).to_string(), RunState::Failed),
    )
    .await;
    // A hold of one task never stops the node's intake for the others: a
    // good task posted now is run and submitted while the first waits.
    let (good, _) = h.post("sha256", b"good").await;
    match within_secs(30, h.node.board.wait_done(good)).await {
        TaskOutcome::Submitted { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        !matches!(
            h.node.board.get(failing),
            Some(nsn_lane1::lifecycle::ExecutorState::Done(_))
        ),
        "the failing task is still held"
    );
    match within_secs(30, h.node.board.wait_done(failing)).await {
        TaskOutcome::Failed { reason, .. } => assert_eq!(reason, FailReason::DeadlineExceeded),
        other => panic!("{other:?}"),
    }
    assert!(
        h.sidecar.sidecar.runs_of(failing).len() >= 2,
        "held and tried again: {:?}",
        h.sidecar.sidecar.runs_of(failing)
    );
    // The node's set-up: a plugin runner that is not configured. The task
    // is held, the node not ready, and once the operator fixes it the task
    // runs and is submitted.
    h.sidecar
        .sidecar
        .set_setup_fault(Some(SetupFault::RunnerNotConfigured));
    let (setup, _) = h.post("sha256", b"y").await;
    until("held for the set-up", || {
        h.node.admission.readiness() == Err(NotReady::SetupFaults(1))
            && h.metrics
                .registry
                .render()
                .contains("lane1_tasks_held{cause=\"setup\"} 1")
    })
    .await;
    assert!(
        h.sidecar.sidecar.runs_of(setup).is_empty(),
        "nothing ran: the runner is missing"
    );
    // The operator fixes the runner: the task runs.
    h.sidecar.sidecar.set_setup_fault(None);
    match within_secs(30, h.node.board.wait_done(setup)).await {
        TaskOutcome::Submitted { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(h.node.admission.readiness(), Ok(()));
    assert_eq!(executor_failed(&h), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", setup), 0);
}

/// A third party on the sidecar's port cancels our run. With either
/// semantics the node runs the task again under a new run id and submits
/// it; nothing is failed, nothing slashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_the_node_did_not_ask_for_runs_the_task_again() {
    for semantics in [Semantics::Reference, Semantics::Nsn] {
        let h = harness(config(), semantics);
        let meddler = h.sidecar.client();
        let (id, _) = h.post("sleep", b"z").await;
        h.run_reaches("our run", id, RunState::Running).await;
        let cancelled = meddler.cancel(id, "meddling").await.unwrap();
        assert!(cancelled.was_running, "the meddler's cancel hit our run");
        match within_secs(30, h.node.board.wait_done(id)).await {
            TaskOutcome::Submitted { .. } => {}
            other => panic!("{semantics:?}: {other:?}"),
        }
        let runs = h.sidecar.sidecar.runs_of(id);
        assert_eq!(runs[0], (RunId::first(id), RunState::Cancelled), "{runs:?}");
        assert_eq!(
            runs.last(),
            Some(&(RunId::first(id).next(), RunState::Completed)),
            "{semantics:?}"
        );
        assert!(
            h.metrics
                .registry
                .render()
                .contains("lane1_foreign_cancels_total 1"),
            "{semantics:?}"
        );
        assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 0);
        assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
        assert_eq!(own_slashes(&h.chain, BOB), 0);
        h.chain.shutdown();
    }
}

/// A third party runs the next task id first, with an input of its own.
/// The node's run under that id is refused — never answered with the
/// other's output — and our output goes out under the next attempt's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoever_runs_our_next_task_id_first_does_not_decide_our_output() {
    for semantics in [Semantics::Reference, Semantics::Nsn] {
        let h = harness(config(), semantics);
        let next = TaskId(h.chain.with_market(|m| m.next_task_id()));
        let theirs = h.sidecar.sidecar.store().put(b"theirs".to_vec()).unwrap();
        let poisoner = h.sidecar.client();
        let poisoned = poisoner
            .execute()
            .oneshot(ExecuteRequest {
                task_id: next,
                lane: Lane::Lane1,
                model: ModelId::new("sha256").unwrap(),
                input_cid: theirs,
                parameters: Parameters::none(),
                timeout: None,
                attempt: 0,
            })
            .await
            .unwrap();
        let (id, _) = h.post("sha256", b"ours").await;
        assert_eq!(id, next, "the poisoner guessed right");
        match within_secs(30, h.node.board.wait_done(id)).await {
            TaskOutcome::Submitted { output_cid, .. } => {
                assert_ne!(output_cid, poisoned.output_cid, "{semantics:?}");
                let ours = h.sidecar.sidecar.store().get(&output_cid).unwrap().unwrap();
                use sha2::Digest;
                assert_eq!(&ours[..], &sha2::Sha256::digest(b"ours")[..]);
            }
            other => panic!("{semantics:?}: {other:?}"),
        }
        assert_eq!(own_slashes(&h.chain, BOB), 0);
        h.chain.shutdown();
    }
}

/// Lane 0 takes the GPU mid-run, the chain's hook does not reach the task
/// (Lane 0 work opened and settled in one block), and the task runs again:
/// against NSN's sidecar, whose cancel only marks and whose run ids are
/// single use, under a new run id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_task_runs_again_against_nsn_semantics() {
    let h = harness(config(), Semantics::Nsn);
    let (id, _) = h.post("sleep", b"p").await;
    h.run_reaches("our run", id, RunState::Running).await;
    let preempted = h
        .node
        .preemptor
        .preempt_lane(Lane::Lane1, nsn_lane1::layer::preempt::PreemptReason::Lane0);
    assert_eq!(preempted, vec![id], "the preemption happened");
    match within_secs(30, h.node.board.wait_done(id)).await {
        TaskOutcome::Submitted { .. } => {}
        other => panic!("{other:?}"),
    }
    let runs = h.sidecar.sidecar.runs_of(id);
    assert_eq!(runs[0], (RunId::first(id), RunState::Cancelled), "{runs:?}");
    assert_eq!(runs.last().map(|r| r.1), Some(RunState::Completed));
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}

/// Three slashing verdicts in a row open the breaker: the node is not
/// ready, admits no new work, and does not sign a fourth ExecutorFailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_slashing_verdicts_in_a_row_open_the_stake_breaker() {
    let h = harness(config(), Semantics::Reference);
    for n in 0..3u8 {
        let (id, _) = h.post("fail", &[n]).await;
        match h.done(id).await {
            TaskOutcome::Failed { reason, .. } => assert_eq!(reason, FailReason::ExecutorFailed),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(executor_failed(&h), 3, "the model's verdict, signed");
    assert_eq!(h.node.admission.readiness(), Err(NotReady::BreakerOpen));
    let ready = nsn_lane1::node::ready_check(
        h.chain.clone(),
        h.sidecar.client(),
        Some(h.node.admission.clone()),
    );
    assert!(ready().await.unwrap_err().contains("stake breaker"));
    // A fourth task is held, not started, not failed.
    let (fourth, _) = h.post("fail", b"4").await;
    until("held by the breaker", || {
        h.metrics
            .registry
            .render()
            .contains("lane1_tasks_held{cause=\"breaker\"} 1")
    })
    .await;
    assert!(
        h.metrics
            .registry
            .render()
            .contains("lane1_stake_breaker_open 1")
    );
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", fourth), 0);
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", fourth), 0);
    assert_eq!(executor_failed(&h), 3, "no fourth slashing call");
    assert!(h.sidecar.sidecar.runs_of(fourth).is_empty());
}

/// A TCP relay between the node and the sidecar whose connections can be
/// cut mid-call, as a network fault would.
struct Relay {
    addr: std::net::SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn to(target: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(relay);
            }
        });
        Relay {
            addr,
            conns,
            accept,
        }
    }

    /// Cuts every connection open now; returns how many.
    fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns {
            c.abort();
        }
        n
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The connection breaks mid-run and the execute stack's retry sends the
/// run again: against NSN's sidecar the first run's id is spent, so the
/// node runs the task under the next one instead of holding it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_retried_after_a_broken_connection_completes_against_nsn_semantics() {
    use nsn_lane1::node::{Node, NodeParts};
    let chain = chain_with(timed);
    let sidecar = TestSidecar::start();
    sidecar.sidecar.set_semantics(Semantics::Nsn);
    let relay = Relay::to(sidecar.addr).await;
    let mut config = config();
    config.retry_attempts = 2;
    config.retry_base = Duration::from_millis(20);
    let node = Node::spawn(
        config,
        NodeParts::dev(&chain, BOB, client_for(&format!("http://{}", relay.addr))),
    );
    let requester = chain.submitter(AccountId::ALICE);
    let cid = sidecar.sidecar.store().put(b"r".to_vec()).unwrap();
    let id = created_id(&ok(&requester, lane1_task("sleep", &cid)).await);
    ok(&requester, MarketCall::AcceptAssignment { task_id: id }).await;
    within(
        "our run",
        sidecar
            .sidecar
            .wait_for(&RunId::first(id).to_string(), RunState::Running),
    )
    .await;
    assert!(relay.cut() > 0, "the connection was cut mid-run");
    match within_secs(30, node.board.wait_done(id)).await {
        TaskOutcome::Submitted { .. } => {}
        other => panic!("{other:?}"),
    }
    let runs = sidecar.sidecar.runs_of(id);
    assert!(runs.len() >= 2, "ran again under a new id: {runs:?}");
    assert_eq!(runs.last().map(|r| r.1), Some(RunState::Completed));
    assert_eq!(calls_on_chain(&chain, BOB, "submit_result", id), 1);
    assert_eq!(calls_on_chain(&chain, BOB, "fail_task", id), 0);
    assert_eq!(own_slashes(&chain, BOB), 0);
    node.stop().await.unwrap();
}

/// A task held for the set-up's fault, that its requester fails meanwhile,
/// ends at once as the chain's doing — whether it was waiting its backoff
/// or running again when the failure came: never dropped without an
/// outcome, never held on to its deadline, the node ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_its_requester_fails_ends_at_once_as_the_chains_doing() {
    let h = harness(config(), Semantics::Nsn);
    h.sidecar
        .sidecar
        .set_setup_fault(Some(SetupFault::RunnerNotConfigured));
    let (id, _) = h.post("sha256", b"held, then failed").await;
    until("held for the set-up", || {
        h.node.admission.readiness() == Err(NotReady::SetupFaults(1))
    })
    .await;
    ok(
        &h.requester,
        MarketCall::FailTask {
            task_id: id,
            reason: FailReason::Other,
        },
    )
    .await;
    match within_secs(10, h.node.board.wait_done(id)).await {
        TaskOutcome::AlreadyResolved {
            status: Some(nsn_lane1::task::TaskStatus::Failed),
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    until("ready again", || h.node.admission.readiness().is_ok()).await;
    assert_eq!(calls_on_chain(&h.chain, BOB, "fail_task", id), 0);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
}
