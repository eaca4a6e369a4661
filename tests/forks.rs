//! The chain boundary: best blocks that are retracted. A node acts on best
//! blocks (it runs a task once its start is pooled, yields to Lane 0 on a
//! best-block hint), so a best block that goes must not leave it believing
//! a call that never happened, or yielding to work that does not exist.
//! The embedded dev chain forks on command; every count is the chain's.
#![cfg(feature = "dev")]

mod support;

use std::time::Duration;

use futures::StreamExt;
use nsn_lane1::chain::dev::{BlockMode, DEV_LANE0_MODEL, DevConfig};
use nsn_lane1::chain::{BlockRef, ChainPort, MarketCall, MarketEvent};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::sidecar::server::RunState;
use nsn_lane1::task::{AccountId, Lane, Priority, RunId, TaskId};
use support::*;

const BOB: AccountId = AccountId::BOB;

/// Blocks every 50 ms, final three blocks later: time to see a call in a
/// best block and retract it before it is final.
fn forking(c: &mut DevConfig) {
    c.block_mode = BlockMode::Interval(Duration::from_millis(50));
    c.finality_lag = Some(3);
    c.auto_attest = Some(90);
}

fn start_forking_node() -> Harness {
    let h = Harness::start(ExecutorConfig::default(), forking);
    h.chain.enable_forks(3);
    h
}

/// The first best block from `blocks` with an event `matches` picks.
async fn best_block_with(
    blocks: &mut nsn_lane1::chain::BlockStream,
    what: &str,
    matches: impl Fn(&MarketEvent) -> bool,
) -> BlockRef {
    within(what, async {
        loop {
            let block = blocks
                .next()
                .await
                .expect("best blocks go on")
                .expect("best block");
            if block.events.iter().any(|r| matches(&r.event)) {
                return block.block_ref();
            }
        }
    })
    .await
}

/// How many `event`s the chain's best branch holds for the task.
fn events_on_chain(h: &Harness, id: TaskId, name: &str) -> usize {
    h.chain
        .extrinsics()
        .iter()
        .filter(|x| x.call.task_id() == Some(id) && x.call.name() == name && x.result.is_ok())
        .count()
}

fn retracted_calls(h: &Harness, call: &str) -> u64 {
    h.metrics.calls_retracted.with(&[call]).get()
}

/// Posts a task for `model` and retracts the best block where its call
/// `call` (`start_task` or `submit_result`) landed, the new branch without
/// that call. Returns the task.
async fn post_and_lose(h: &Harness, model: &str, input: &[u8], call: &'static str) -> TaskId {
    let mut best = h.chain.best_blocks(None);
    let (id, executor) = h.post(model, input).await;
    assert_eq!(executor, BOB);
    let event = match call {
        "start_task" => "TaskStarted",
        _ => "TaskSubmitted",
    };
    let at = best_block_with(&mut best, call, |e| {
        e.task_id() == Some(id) && e.name() == event
    })
    .await;
    let fork = h
        .chain
        .fork_from(at.number, |_, c| c.name() != call)
        .expect("its block is not final");
    assert!(
        fork.discarded
            .iter()
            .any(|x| x.call.name() == call && x.call.task_id() == Some(id)),
        "{call} was retracted, and the new branch lacks it"
    );
    id
}

#[tokio::test]
async fn a_start_whose_block_is_retracted_and_not_on_the_new_branch_is_sent_again() {
    let h = start_forking_node();
    h.node.following().await;
    // Long enough that the loss is found (at the start's height's
    // finality) before the result could make the start moot.
    let id = post_and_lose(&h, "sleep", br#"{"duration_ms":1500}"#, "start_task").await;
    until_verified(&h.chain, id, 30).await;
    assert_eq!(
        events_on_chain(&h, id, "start_task"),
        1,
        "sent again: one TaskStarted on the chain"
    );
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(retracted_calls(&h, "start_task"), 1);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    assert_eq!(rule_slashes(&h.chain, BOB), 0);
    // One run: the model was not run again for a call the chain lost.
    assert_eq!(h.sidecar.sidecar.runs_of(id).len(), 1);
}

#[tokio::test]
async fn a_result_whose_block_is_retracted_and_not_on_the_new_branch_is_sent_again() {
    let h = start_forking_node();
    h.node.following().await;
    let id = post_and_lose(&h, "sha256", b"forked result", "submit_result").await;
    until_verified(&h.chain, id, 30).await;
    assert_eq!(events_on_chain(&h, id, "submit_result"), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(retracted_calls(&h, "submit_result"), 1);
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    assert_eq!(rule_slashes(&h.chain, BOB), 0);
    assert_eq!(h.sidecar.sidecar.runs_of(id).len(), 1, "not run again");
}

#[tokio::test]
async fn calls_resubmitted_onto_the_new_branch_are_not_sent_again() {
    let h = start_forking_node();
    h.node.following().await;
    let mut best = h.chain.best_blocks(None);
    let (id, _) = h.post("sha256", b"resubmitted").await;
    let at = best_block_with(
        &mut best,
        "submit_result in a best block",
        |e| matches!(e, MarketEvent::TaskSubmitted { task_id, .. } if *task_id == id),
    )
    .await;
    // The pool puts the retracted calls in the new branch, as a node's does.
    let fork = h.chain.fork_from(at.number, |_, _| true).expect("fork");
    assert!(!fork.repooled.is_empty());
    until_verified(&h.chain, id, 30).await;
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(retracted_calls(&h, "submit_result"), 0);
    assert_eq!(retracted_calls(&h, "start_task"), 0);
}

#[tokio::test]
async fn lane0_work_from_a_retracted_block_is_withdrawn_and_lane1_resumes() {
    let h = start_forking_node();
    h.node.following().await;
    let (id, _) = h.post("sleep", br#"{"duration_ms":3000}"#).await;
    h.run_reaches("first run", id, RunState::Running).await;
    // Finality stops: only best blocks move, and only their hints can
    // tell the node anything.
    h.chain.stall_finality(true);
    let mut lane0 = create(Lane::Lane0, DEV_LANE0_MODEL);
    if let MarketCall::CreateTaskIntent { priority, .. } = &mut lane0 {
        *priority = Priority::High;
    }
    let created = send(&h.requester, lane0)
        .await
        .await
        .expect("in a best block");
    // The node yields the GPU on the hint.
    h.run_reaches("the run preempted by the hint", id, RunState::Cancelled)
        .await;
    // The block goes; the new branch has no Lane 0 work.
    let fork = h
        .chain
        .fork_from(created.block.number, |_, call| {
            !matches!(call, MarketCall::CreateTaskIntent { .. })
        })
        .expect("fork");
    assert_eq!(fork.discarded.len(), 1);
    // Lane 1 resumes at once, finality still stalled.
    let rerun: RunId = format!("{}-1", id.0).parse().expect("run id");
    h.run_reaches("the task run again", rerun, RunState::Running)
        .await;
    assert!(h.chain.finalized_number() < created.block.number);
    h.chain.stall_finality(false);
    until_verified(&h.chain, id, 30).await;
    assert_eq!(own_slashes(&h.chain, BOB), 0);
    assert_eq!(rule_slashes(&h.chain, BOB), 0, "no hook slash on our task");
}

#[tokio::test]
async fn a_second_process_signing_with_the_key_stops_the_node_signing() {
    let h = Harness::start(ExecutorConfig::default(), timed);
    h.node.following().await;
    let first = h.post_until_verified("sha256", b"before").await;
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", first), 1);
    assert!(h.node.admission.readiness().is_ok(), "no false alarm");
    // Another process with Bob's key sends a call of its own.
    let other = h.chain.submitter(BOB);
    let _ = send(
        &other,
        MarketCall::FinalizeTask {
            task_id: TaskId(999_999),
        },
    )
    .await
    .await;
    let mut blocks = h.chain.finalized_blocks(None);
    within("the node sees the other signer", async {
        while h.node.admission.readiness().is_ok() {
            blocks.next().await.expect("blocks go on").expect("block");
        }
    })
    .await;
    assert!(matches!(
        h.node.admission.readiness(),
        Err(nsn_lane1::admission::NotReady::ForeignSigner(_))
    ));
    assert_eq!(h.metrics.foreign_signer.with(&[]).get(), 1);
    // It signs nothing more: a task assigned to it is not started.
    let (id, executor) = h.post("sha256", b"after").await;
    assert_eq!(executor, BOB);
    for _ in 0..20 {
        blocks.next().await.expect("blocks go on").expect("block");
    }
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 0);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 0);
}

#[tokio::test]
async fn calls_keep_landing_while_finality_stalls_for_a_hundred_blocks() {
    let h = start_forking_node();
    h.node.following().await;
    let mut best = h.chain.best_blocks(None);
    let (id, _) = h.post("sleep", br#"{"duration_ms":300}"#).await;
    h.run_reaches("the run", id, RunState::Running).await;
    h.chain.stall_finality(true);
    let stalled_at = h.chain.finalized_number();
    // The result lands in a best block while nothing more is final.
    best_block_with(
        &mut best,
        "the result in a best block",
        |e| matches!(e, MarketEvent::TaskSubmitted { task_id, .. } if *task_id == id),
    )
    .await;
    within("a hundred blocks", async {
        while h.chain.head_number() < stalled_at + 100 {
            best.next()
                .await
                .expect("best blocks go on")
                .expect("block");
        }
    })
    .await;
    assert_eq!(h.chain.finalized_number(), stalled_at, "finality stalled");
    assert!(h.node.admission.readiness().is_ok());
    h.chain.stall_finality(false);
    until_verified(&h.chain, id, 30).await;
    assert_eq!(calls_on_chain(&h.chain, BOB, "start_task", id), 1);
    assert_eq!(calls_on_chain(&h.chain, BOB, "submit_result", id), 1);
    assert_eq!(retracted_calls(&h, "submit_result"), 0);
}
