//! The embedded dev chain against the task-market interface: each call's
//! happy path and every error it can return, the hooks, payment arithmetic,
//! events field by field, nonces, storage history and block streams.

mod support;

use futures::StreamExt;
use nsn_lane1::chain::dev::{BlockMode, DevGenesis, Market, TREASURY};
use nsn_lane1::chain::{
    ChainError, ChainPort, DispatchError, InvalidTransaction, MarketCall, MarketError, MarketEvent,
    Phase, SubmitError,
};
use nsn_lane1::task::{AccountId, FailReason, Lane, Priority, TaskId, TaskStatus, UNIT};
use support::*;

const ALICE: AccountId = AccountId::ALICE;
const BOB: AccountId = AccountId::BOB;
const CHARLIE: AccountId = AccountId::CHARLIE;
const DAVE: AccountId = AccountId::DAVE;
const EVE: AccountId = AccountId::EVE;
const FERDIE: AccountId = AccountId::FERDIE;

fn status(chain: &nsn_lane1::chain::dev::DevChain, id: TaskId) -> TaskStatus {
    chain.with_market(|m| m.task(id).map(|t| t.status).expect("task exists"))
}

fn attest(task_id: TaskId, score: u8) -> MarketCall {
    MarketCall::SubmitAttestation {
        task_id,
        score,
        attestation_cid: None,
    }
}

fn submit(task_id: TaskId) -> MarketCall {
    MarketCall::SubmitResult {
        task_id,
        output_cid: OUTPUT_CID.as_bytes().to_vec(),
        attestation_cid: None,
    }
}

/// Creates a Lane 1 task as Alice and has it assigned (to Bob, the only executor).
async fn assigned_task(chain: &nsn_lane1::chain::dev::DevChain) -> TaskId {
    let inc = ok(&chain.submitter(ALICE), create(Lane::Lane1, "sha256")).await;
    let id = created_id(&inc);
    ok(
        &chain.submitter(ALICE),
        MarketCall::AcceptAssignment { task_id: id },
    )
    .await;
    id
}

#[tokio::test]
async fn full_lifecycle_to_verified_with_payment() {
    let chain = chain();
    let (alice, bob, dave, eve) = (
        chain.submitter(ALICE),
        chain.submitter(BOB),
        chain.submitter(DAVE),
        chain.submitter(EVE),
    );
    let before = chain.with_market(|m| {
        (
            m.account(&ALICE),
            m.account(&BOB),
            m.account(&TREASURY),
            m.total_issuance(),
        )
    });
    let escrow = 10 * UNIT + 7;

    let inc = ok(&alice, create_with(Lane::Lane1, "sha256", 40, escrow)).await;
    assert_eq!(inc.block.number, 1);
    assert_eq!(inc.index, 0);
    assert_eq!(inc.nonce, 0);
    assert_eq!(
        inc.events,
        vec![MarketEvent::TaskCreated {
            task_id: TaskId(0),
            requester: ALICE,
            escrow,
            deadline: 41,
            lane: Lane::Lane1,
            priority: Priority::Normal,
            model_requirements: b"sha256".to_vec(),
        }]
    );
    let id = TaskId(0);
    chain.with_market(|m| {
        assert_eq!(m.account(&ALICE).reserved, before.0.reserved + escrow);
        assert_eq!(m.open_tasks(Lane::Lane1), &[id]);
        let t = m.task(id).unwrap();
        assert_eq!(t.input_cid, INPUT_CID.as_bytes());
        assert_eq!((t.created_at, t.deadline, t.compute_budget), (1, 41, 1_000));
    });

    let inc = ok(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::TaskAssigned {
            task_id: id,
            executor: BOB
        }]
    );
    assert_eq!(status(&chain, id), TaskStatus::Assigned);
    chain.with_market(|m| {
        assert!(m.open_tasks(Lane::Lane1).is_empty());
        assert_eq!(m.assigned_lane1_tasks(), &[id]);
    });

    let inc = ok(&bob, MarketCall::StartTask { task_id: id }).await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::TaskStarted {
            task_id: id,
            executor: BOB
        }]
    );
    assert_eq!(status(&chain, id), TaskStatus::Executing);

    let inc = ok(&bob, submit(id)).await;
    let submitted_at = inc.block.number;
    assert_eq!(
        inc.events,
        vec![MarketEvent::TaskSubmitted {
            task_id: id,
            executor: BOB,
            output_cid: OUTPUT_CID.as_bytes().to_vec(),
            attestation_cid: None,
            verification_deadline: submitted_at + 100,
            required_quorum: 2,
        }]
    );
    chain.with_market(|m| {
        assert!(m.assigned_lane1_tasks().is_empty());
        assert_eq!(m.pending_verification_tasks(), &[id]);
        assert_eq!(m.verification_deadline(id), Some(submitted_at + 100));
        assert_eq!(m.required_quorum(id), Some(2));
    });

    let inc = ok(&dave, attest(id, 80)).await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::AttestationSubmitted {
            task_id: id,
            validator: DAVE,
            score: 80
        }]
    );
    assert_eq!(status(&chain, id), TaskStatus::PendingVerification);

    let inc = ok(&eve, attest(id, 91)).await;
    let (to_executor, to_treasury, burned) = Market::payment_split(escrow);
    assert_eq!(
        inc.events,
        vec![
            MarketEvent::AttestationSubmitted {
                task_id: id,
                validator: EVE,
                score: 91
            },
            MarketEvent::TaskVerified {
                task_id: id,
                executor: BOB,
                payment: to_executor,
                average_score: 85,
            },
        ]
    );
    assert_eq!(status(&chain, id), TaskStatus::Verified);
    // 10 UNIT + 7: 70 % = 7 UNIT + 4 (4.9 floored), 20 % = 2 UNIT + 1, burn the rest.
    assert_eq!(to_executor, 7 * UNIT + 4);
    assert_eq!(to_treasury, 2 * UNIT + 1);
    assert_eq!(burned, UNIT + 2);
    chain.with_market(|m| {
        assert_eq!(m.account(&ALICE).reserved, before.0.reserved);
        assert_eq!(m.account(&ALICE).free, before.0.free - escrow);
        assert_eq!(m.account(&BOB).free, before.1.free + to_executor);
        assert_eq!(m.account(&TREASURY).free, before.2.free + to_treasury);
        assert_eq!(m.total_issuance(), before.3 - burned);
        assert!(m.pending_verification_tasks().is_empty());
    });
}

#[tokio::test]
async fn auto_attest_reaches_verified_without_help() {
    let chain = chain_with(|c| c.auto_attest = Some(75));
    let id = assigned_task(&chain).await;
    ok(&chain.submitter(BOB), submit(id)).await;
    // The validators' attestations went into the following blocks.
    assert_eq!(status(&chain, id), TaskStatus::Verified);
    let atts = chain.with_market(|m| m.attestations(id).to_vec());
    assert_eq!(atts.len(), 2);
    assert!(atts.iter().all(|a| a.score == 75));
}

#[tokio::test]
async fn failing_average_rejects_and_refunds() {
    let chain = chain();
    let id = assigned_task(&chain).await;
    ok(&chain.submitter(BOB), submit(id)).await;
    let before = chain.with_market(|m| m.account(&ALICE));
    ok(&chain.submitter(DAVE), attest(id, 70)).await;
    let inc = ok(&chain.submitter(EVE), attest(id, 69)).await;
    assert_eq!(
        inc.events[1],
        MarketEvent::TaskRejected {
            task_id: id,
            executor: Some(BOB),
            average_score: Some(69),
            deadline_exceeded: false,
        }
    );
    assert_eq!(status(&chain, id), TaskStatus::Rejected);
    chain.with_market(|m| {
        assert_eq!(m.account(&ALICE).free, before.free + UNIT);
        assert_eq!(m.account(&ALICE).reserved, before.reserved - UNIT);
    });
}

#[tokio::test]
async fn create_task_intent_errors() {
    let chain = chain_with(|c| c.genesis.params.max_pending_tasks = 2);
    let alice = chain.submitter(ALICE);
    assert_eq!(
        err(&alice, create_with(Lane::Lane1, "sha256", 0, UNIT)).await,
        MarketError::InvalidDeadline
    );
    assert_eq!(
        err(
            &alice,
            create_with(Lane::Lane1, "sha256", 10, UNIT / 10 - 1)
        )
        .await,
        MarketError::InsufficientEscrow
    );
    assert_eq!(
        err(&alice, create(Lane::Lane1, "no-such-model")).await,
        MarketError::RendererNotRegistered
    );
    assert_eq!(
        err(&alice, create(Lane::Lane0, "sha256")).await,
        MarketError::RendererLaneMismatch
    );
    assert_eq!(
        err(
            &alice,
            create_with(Lane::Lane1, "sha256", 10, 2_000_000 * UNIT)
        )
        .await,
        MarketError::InsufficientBalance
    );
    assert_eq!(
        err(&alice, create_with(Lane::Lane1, "sha256", u32::MAX, UNIT)).await,
        MarketError::Overflow
    );
    ok(&alice, create(Lane::Lane1, "sha256")).await;
    ok(&alice, create(Lane::Lane1, "sha256")).await;
    assert_eq!(
        err(&alice, create(Lane::Lane1, "sha256")).await,
        MarketError::TooManyPendingTasks
    );
    // The bound is per lane.
    ok(&alice, create(Lane::Lane0, "video-render")).await;
    // Root is not a signed origin.
    assert!(matches!(
        submit_err(&chain.sudo(), create(Lane::Lane1, "sha256")).await,
        SubmitError::Dispatch {
            call: "create_task_intent",
            error: DispatchError::BadOrigin,
            ..
        }
    ));
    // Nothing of the failed calls stuck: only three tasks exist.
    assert_eq!(chain.with_market(|m| m.next_task_id()), 3);
}

#[tokio::test]
async fn oversized_arguments_do_not_decode() {
    let chain = chain();
    let call = MarketCall::CreateTaskIntent {
        lane: Lane::Lane1,
        priority: Priority::Low,
        model_requirements: vec![b'm'; 65],
        input_cid: INPUT_CID.as_bytes().to_vec(),
        compute_budget: 0,
        deadline_blocks: 5,
        escrow_amount: UNIT,
    };
    match submit_err(&chain.submitter(ALICE), call).await {
        SubmitError::Invalid {
            call: "create_task_intent",
            reason: InvalidTransaction::BadCall(msg),
        } => assert!(msg.contains("model_requirements is 65 bytes"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let call = MarketCall::SubmitResult {
        task_id: TaskId(0),
        output_cid: vec![b'c'; 129],
        attestation_cid: None,
    };
    assert!(matches!(
        submit_err(&chain.submitter(BOB), call).await,
        SubmitError::Invalid {
            reason: InvalidTransaction::BadCall(_),
            ..
        }
    ));
    assert_eq!(chain.head_number(), 0, "no block was built for them");
    assert_eq!(chain.account_nonce(ALICE).await.unwrap(), 0);
}

#[tokio::test]
async fn accept_assignment_errors() {
    let chain = chain_with(|c| c.genesis.params.max_assigned_lane1_tasks = 1);
    let alice = chain.submitter(ALICE);
    let charlie = chain.submitter(CHARLIE);
    assert_eq!(
        err(
            &charlie,
            MarketCall::AcceptAssignment { task_id: TaskId(9) }
        )
        .await,
        MarketError::TaskNotFound
    );
    let id = assigned_task(&chain).await;
    assert_eq!(
        err(&charlie, MarketCall::AcceptAssignment { task_id: id }).await,
        MarketError::TaskAlreadyAssigned
    );
    let second = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    assert_eq!(
        err(&charlie, MarketCall::AcceptAssignment { task_id: second }).await,
        MarketError::TooManyAssignedLane1Tasks
    );
    ok(
        &alice,
        MarketCall::FailTask {
            task_id: second,
            reason: FailReason::Cancelled,
        },
    )
    .await;
    assert_eq!(
        err(&charlie, MarketCall::AcceptAssignment { task_id: second }).await,
        MarketError::TaskNotOpen
    );
    assert_eq!(
        submit_err(&chain.sudo(), MarketCall::AcceptAssignment { task_id: id })
            .await
            .market_error(),
        None,
        "root gets BadOrigin, not a market error"
    );

    // Lane 0 open → Lane 1 must wait.
    let third = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    ok(&alice, create(Lane::Lane0, "video-render")).await;
    assert_eq!(
        err(&charlie, MarketCall::AcceptAssignment { task_id: third }).await,
        MarketError::Lane0Priority
    );
}

#[tokio::test]
async fn no_eligible_executor_for_a_lane() {
    let chain = chain_with(|c| c.genesis.executors = vec![(BOB, 100 * UNIT, vec![Lane::Lane1])]);
    let id = created_id(&ok(&chain.submitter(ALICE), create(Lane::Lane0, "video-render")).await);
    assert_eq!(
        err(
            &chain.submitter(ALICE),
            MarketCall::AcceptAssignment { task_id: id }
        )
        .await,
        MarketError::NoEligibleExecutors
    );
}

#[tokio::test]
async fn assignment_picks_only_eligible_stake_weighted_executors() {
    let chain = chain_with(|c| {
        c.genesis.executors = vec![
            (BOB, 100 * UNIT, vec![Lane::Lane1]),
            (CHARLIE, 300 * UNIT, vec![Lane::Lane1]),
            (FERDIE, 100 * UNIT, vec![Lane::Lane0]),
        ];
        c.genesis.params.max_pending_tasks = 1000;
    });
    let alice = chain.submitter(ALICE);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..200 {
        let id = created_id(&ok(&alice, create(Lane::Lane1, "noop")).await);
        let inc = ok(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
        let MarketEvent::TaskAssigned { executor, .. } = inc.events[0] else {
            panic!("{:?}", inc.events);
        };
        *counts.entry(executor).or_insert(0u32) += 1;
    }
    assert_eq!(
        counts.get(&FERDIE),
        None,
        "a Lane 0-only executor got Lane 1 work"
    );
    let (bob, charlie) = (counts[&BOB], counts[&CHARLIE]);
    assert_eq!(bob + charlie, 200);
    // Stake 1 : 3 → expect ~50 : 150.
    assert!((25..=80).contains(&bob), "bob {bob}, charlie {charlie}");
}

#[tokio::test]
async fn start_task_errors() {
    let chain = chain();
    let alice = chain.submitter(ALICE);
    let bob = chain.submitter(BOB);
    assert_eq!(
        err(&bob, MarketCall::StartTask { task_id: TaskId(3) }).await,
        MarketError::TaskNotFound
    );
    let open = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    assert_eq!(
        err(&bob, MarketCall::StartTask { task_id: open }).await,
        MarketError::TaskNotAssigned
    );
    ok(&alice, MarketCall::AcceptAssignment { task_id: open }).await;
    assert_eq!(
        err(
            &chain.submitter(CHARLIE),
            MarketCall::StartTask { task_id: open }
        )
        .await,
        MarketError::NotExecutor
    );
    // Lane 0 work created in the same block, before the start: Lane0Priority.
    let chain = chain_with(|c| c.block_mode = BlockMode::Manual);
    let alice = chain.submitter(ALICE);
    let bob = chain.submitter(BOB);
    let created = send(&alice, create(Lane::Lane1, "sha256")).await;
    chain.produce_block();
    let id = created_id(&created.await.unwrap());
    let assign = send(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    chain.produce_block();
    assign.await.unwrap();
    let lane0 = send(&alice, create(Lane::Lane0, "video-render")).await;
    let start = send(&bob, MarketCall::StartTask { task_id: id }).await;
    let block = chain.produce_block();
    lane0.await.unwrap();
    assert_eq!(
        start.await.unwrap_err().market_error(),
        Some(MarketError::Lane0Priority)
    );
    assert_eq!(
        block.events.len(),
        1,
        "only the Lane 0 creation: {:?}",
        block.events
    );
}

#[tokio::test]
async fn submit_result_errors() {
    let chain = chain_with(|c| c.genesis.params.max_pending_tasks = 1);
    let alice = chain.submitter(ALICE);
    let bob = chain.submitter(BOB);
    assert_eq!(
        err(&bob, submit(TaskId(5))).await,
        MarketError::TaskNotFound
    );
    let open = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    assert_eq!(err(&bob, submit(open)).await, MarketError::TaskNotExecuting);
    ok(&alice, MarketCall::AcceptAssignment { task_id: open }).await;
    assert_eq!(
        err(&chain.submitter(CHARLIE), submit(open)).await,
        MarketError::NotExecutor
    );
    // Straight from Assigned is allowed.
    ok(&bob, submit(open)).await;
    assert_eq!(status(&chain, open), TaskStatus::Submitted);
    assert_eq!(err(&bob, submit(open)).await, MarketError::TaskNotExecuting);

    // The pending-verification list is full (bound 1).
    let second = assigned_task(&chain).await;
    assert_eq!(
        err(&bob, submit(second)).await,
        MarketError::TooManyPendingVerifications
    );
}

#[tokio::test]
async fn lane0_results_need_an_attestation() {
    let chain = chain();
    let alice = chain.submitter(ALICE);
    let bob = chain.submitter(BOB);
    let id = created_id(&ok(&alice, create(Lane::Lane0, "video-render")).await);
    ok(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    ok(&bob, MarketCall::StartTask { task_id: id }).await;
    assert_eq!(err(&bob, submit(id)).await, MarketError::MissingAttestation);
    let empty = MarketCall::SubmitResult {
        task_id: id,
        output_cid: OUTPUT_CID.as_bytes().to_vec(),
        attestation_cid: Some(vec![]),
    };
    assert_eq!(err(&bob, empty).await, MarketError::InvalidAttestationCid);
    let good = MarketCall::SubmitResult {
        task_id: id,
        output_cid: OUTPUT_CID.as_bytes().to_vec(),
        attestation_cid: Some(INPUT_CID.as_bytes().to_vec()),
    };
    let inc = ok(&bob, good).await;
    let MarketEvent::TaskSubmitted {
        attestation_cid, ..
    } = &inc.events[0]
    else {
        panic!("{:?}", inc.events)
    };
    assert_eq!(attestation_cid.as_deref(), Some(INPUT_CID.as_bytes()));
}

#[tokio::test]
async fn fail_task_rules_refunds_and_slashes() {
    let chain = chain();
    let alice = chain.submitter(ALICE);
    let bob = chain.submitter(BOB);
    let charlie = chain.submitter(CHARLIE);
    let fail = |task_id, reason| MarketCall::FailTask { task_id, reason };

    assert_eq!(
        err(&alice, fail(TaskId(1), FailReason::Cancelled)).await,
        MarketError::TaskNotFound
    );
    // Open: only the requester may cancel.
    let open = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    assert_eq!(
        err(&bob, fail(open, FailReason::Cancelled)).await,
        MarketError::NotRequester
    );
    let free_before = chain.with_market(|m| m.account(&ALICE).free);
    let inc = ok(&alice, fail(open, FailReason::Cancelled)).await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::TaskFailed {
            task_id: open,
            reason: FailReason::Cancelled
        }]
    );
    assert_eq!(
        chain.with_market(|m| m.account(&ALICE).free),
        free_before + UNIT
    );
    assert!(chain.with_market(|m| m.open_tasks(Lane::Lane1).is_empty()));
    assert_eq!(
        err(&alice, fail(open, FailReason::Cancelled)).await,
        MarketError::TaskNotExecuting,
        "a failed task cannot fail again"
    );

    // Assigned: a stranger may not fail it.
    let id = assigned_task(&chain).await;
    assert_eq!(
        err(&charlie, fail(id, FailReason::Other)).await,
        MarketError::NotExecutor
    );
    // The executor reports its own failure: slashed 5 UNIT to the treasury.
    let (stake, treasury) =
        chain.with_market(|m| (m.executor(&BOB).unwrap().stake, m.account(&TREASURY).free));
    ok(&bob, MarketCall::StartTask { task_id: id }).await;
    ok(&bob, fail(id, FailReason::ExecutorFailed)).await;
    chain.with_market(|m| {
        assert_eq!(m.executor(&BOB).unwrap().stake, stake - 5 * UNIT);
        assert_eq!(m.account(&TREASURY).free, treasury + 5 * UNIT);
        assert!(m.assigned_lane1_tasks().is_empty());
        assert_eq!(m.task(id).unwrap().status, TaskStatus::Failed);
    });

    // The requester cancels executing work: no slash.
    let id = assigned_task(&chain).await;
    ok(&bob, MarketCall::StartTask { task_id: id }).await;
    let stake = chain.with_market(|m| m.executor(&BOB).unwrap().stake);
    ok(&alice, fail(id, FailReason::Cancelled)).await;
    assert_eq!(
        chain.with_market(|m| m.executor(&BOB).unwrap().stake),
        stake
    );

    // A submitted task can still be failed (and its verification is dropped).
    let id = assigned_task(&chain).await;
    ok(&bob, submit(id)).await;
    ok(&bob, fail(id, FailReason::DeadlineExceeded)).await;
    chain.with_market(|m| {
        assert!(m.pending_verification_tasks().is_empty());
        assert_eq!(m.verification_deadline(id), None);
    });
}

#[tokio::test]
async fn slash_is_capped_at_the_stake() {
    let chain = chain_with(|c| c.genesis.executors = vec![(BOB, 3 * UNIT, vec![Lane::Lane1])]);
    let id = assigned_task(&chain).await;
    ok(
        &chain.submitter(BOB),
        MarketCall::FailTask {
            task_id: id,
            reason: FailReason::Preempted,
        },
    )
    .await;
    chain.with_market(|m| {
        assert_eq!(m.executor(&BOB).unwrap().stake, 0);
        assert_eq!(m.account(&BOB).reserved, 0);
    });
    // With no stake left, Bob is no longer eligible.
    let next = created_id(&ok(&chain.submitter(ALICE), create(Lane::Lane1, "sha256")).await);
    assert_eq!(
        err(
            &chain.submitter(ALICE),
            MarketCall::AcceptAssignment { task_id: next }
        )
        .await,
        MarketError::NoEligibleExecutors
    );
}

fn register(id: &str, lane: Lane, deterministic: bool, latency: u32, vram: u32) -> MarketCall {
    MarketCall::RegisterRenderer {
        renderer_id: id.as_bytes().to_vec(),
        lane,
        deterministic,
        max_latency_ms: latency,
        vram_required_mb: vram,
    }
}

#[tokio::test]
async fn renderer_registry_calls_and_errors() {
    let chain = chain_with(|c| c.genesis.params.max_renderers = 9);
    let sudo = chain.sudo();
    let inc = ok(
        &sudo,
        register("llama", Lane::Lane1, false, 120_000, 11_500),
    )
    .await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::RendererRegistered {
            renderer_id: b"llama".to_vec(),
            lane: Lane::Lane1
        }]
    );
    assert!(matches!(
        submit_err(
            &chain.submitter(ALICE),
            register("x", Lane::Lane1, true, 1, 1)
        )
        .await,
        SubmitError::Dispatch {
            error: DispatchError::BadOrigin,
            ..
        }
    ));
    assert_eq!(
        err(&sudo, register("", Lane::Lane1, true, 1, 1)).await,
        MarketError::InvalidRendererId
    );
    assert_eq!(
        err(&sudo, register("llama", Lane::Lane1, true, 1, 1)).await,
        MarketError::RendererAlreadyRegistered
    );
    assert_eq!(
        err(&sudo, register("v", Lane::Lane0, false, 1, 1)).await,
        MarketError::RendererNotDeterministic
    );
    assert_eq!(
        err(&sudo, register("v", Lane::Lane0, true, 15_001, 1)).await,
        MarketError::RendererLatencyExceeded
    );
    assert_eq!(
        err(&sudo, register("v", Lane::Lane1, true, 120_001, 1)).await,
        MarketError::RendererLatencyExceeded
    );
    assert_eq!(
        err(&sudo, register("v", Lane::Lane1, true, 1, 11_501)).await,
        MarketError::RendererVramExceeded
    );
    // The development genesis has 7 renderers + llama + ninth = 9 = the bound.
    ok(&sudo, register("ninth", Lane::Lane0, true, 15_000, 0)).await;
    assert_eq!(
        err(&sudo, register("one-more", Lane::Lane1, true, 1, 1)).await,
        MarketError::RendererRegistryFull
    );

    let dereg = |id: &str| MarketCall::DeregisterRenderer {
        renderer_id: id.as_bytes().to_vec(),
    };
    let inc = ok(&sudo, dereg("llama")).await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::RendererDeregistered {
            renderer_id: b"llama".to_vec()
        }]
    );
    assert_eq!(
        err(&sudo, dereg("llama")).await,
        MarketError::RendererNotRegistered
    );
    assert!(matches!(
        submit_err(&chain.submitter(ALICE), dereg("sha256")).await,
        SubmitError::Dispatch {
            error: DispatchError::BadOrigin,
            ..
        }
    ));
    // A deregistered model takes no new tasks.
    ok(&sudo, dereg("sha256")).await;
    assert_eq!(
        err(&chain.submitter(ALICE), create(Lane::Lane1, "sha256")).await,
        MarketError::RendererNotRegistered
    );
}

#[tokio::test]
async fn submit_attestation_errors() {
    let chain = chain_with(|c| c.genesis.validators = vec![DAVE, EVE, FERDIE]);
    let (dave, eve) = (chain.submitter(DAVE), chain.submitter(EVE));
    assert_eq!(
        err(&chain.submitter(BOB), attest(TaskId(0), 90)).await,
        MarketError::NotValidator
    );
    assert_eq!(
        err(&dave, attest(TaskId(0), 90)).await,
        MarketError::TaskNotFound
    );
    let id = assigned_task(&chain).await;
    assert_eq!(
        err(&dave, attest(id, 90)).await,
        MarketError::TaskNotSubmitted
    );
    ok(&chain.submitter(BOB), submit(id)).await;
    assert_eq!(
        err(&dave, attest(id, 101)).await,
        MarketError::InvalidAttestationScore
    );
    let empty = MarketCall::SubmitAttestation {
        task_id: id,
        score: 90,
        attestation_cid: Some(vec![]),
    };
    assert_eq!(err(&dave, empty).await, MarketError::InvalidAttestationCid);
    ok(&dave, attest(id, 90)).await;
    assert_eq!(
        err(&dave, attest(id, 90)).await,
        MarketError::DuplicateAttestation
    );
    ok(&eve, attest(id, 90)).await;
    // Quorum settled it: a third attestation comes too late.
    assert_eq!(
        err(&chain.submitter(FERDIE), attest(id, 90)).await,
        MarketError::TaskNotSubmitted
    );

    // Past the verification window.
    let id = assigned_task(&chain).await;
    let inc = ok(&chain.submitter(BOB), submit(id)).await;
    let deadline = inc.block.number + 100;
    // Build blocks up to the deadline: attesting in the deadline block is still allowed...
    let to_go = deadline - chain.head_number() - 1;
    chain.produce_blocks(to_go);
    ok(&dave, attest(id, 90)).await;
    assert_eq!(chain.head_number(), deadline);
    // ...but the deadline hook rejects it in the next block, so Eve is too late.
    assert_eq!(
        err(&eve, attest(id, 90)).await,
        MarketError::TaskNotSubmitted
    );
    assert_eq!(status(&chain, id), TaskStatus::Rejected);
}

#[tokio::test]
async fn attestation_after_deadline_without_hook_is_refused() {
    // With the per-block bound at 0 the hook cannot act, which exposes the call's own check.
    let chain = chain_with(|c| c.genesis.params.max_expired_per_block = 0);
    let id = assigned_task(&chain).await;
    let inc = ok(&chain.submitter(BOB), submit(id)).await;
    chain.produce_blocks(100);
    assert_eq!(chain.head_number(), inc.block.number + 100);
    assert_eq!(
        err(&chain.submitter(DAVE), attest(id, 90)).await,
        MarketError::VerificationDeadlinePassed
    );
    // finalize_task is the way out: rejected, deadline exceeded, no score.
    let inc = ok(
        &chain.submitter(CHARLIE),
        MarketCall::FinalizeTask { task_id: id },
    )
    .await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::TaskRejected {
            task_id: id,
            executor: Some(BOB),
            average_score: None,
            deadline_exceeded: true
        }]
    );
}

#[tokio::test]
async fn finalize_task_errors_and_deadline_path() {
    let chain = chain_with(|c| c.genesis.params.max_expired_per_block = 0);
    let charlie = chain.submitter(CHARLIE);
    let fin = |task_id| MarketCall::FinalizeTask { task_id };
    assert_eq!(
        err(&charlie, fin(TaskId(0))).await,
        MarketError::TaskNotFound
    );
    let id = assigned_task(&chain).await;
    assert_eq!(err(&charlie, fin(id)).await, MarketError::TaskNotSubmitted);
    ok(&chain.submitter(BOB), submit(id)).await;
    ok(&chain.submitter(DAVE), attest(id, 40)).await;
    assert_eq!(
        err(&charlie, fin(id)).await,
        MarketError::VerificationPending
    );
    chain.produce_blocks(100);
    let inc = ok(&charlie, fin(id)).await;
    assert_eq!(
        inc.events,
        vec![MarketEvent::TaskRejected {
            task_id: id,
            executor: Some(BOB),
            average_score: Some(40),
            deadline_exceeded: true
        }]
    );
    assert!(matches!(
        submit_err(&chain.sudo(), fin(id)).await,
        SubmitError::Dispatch {
            error: DispatchError::BadOrigin,
            ..
        }
    ));
}

#[tokio::test]
async fn expiry_hook_is_bounded_per_block_and_refunds() {
    let chain = chain_with(|c| {
        c.genesis.params.max_expired_per_block = 2;
        c.block_mode = BlockMode::Manual;
    });
    let alice = chain.submitter(ALICE);
    let free = chain.with_market(|m| m.account(&ALICE).free);
    let mut pending = Vec::new();
    for _ in 0..3 {
        pending.push(send(&alice, create_with(Lane::Lane1, "sha256", 1, UNIT)).await);
    }
    chain.produce_block();
    let mut ids = Vec::new();
    for p in pending {
        ids.push(created_id(&p.await.unwrap()));
    }
    // All three were created in block 1 with deadline 2: block 3 is the first past it.
    assert!(chain.produce_block().events.is_empty());
    let b3 = chain.produce_block();
    let expired: Vec<_> = b3
        .events
        .iter()
        .map(|r| (r.phase, r.event.clone()))
        .collect();
    assert_eq!(
        expired,
        vec![
            (
                Phase::Initialization,
                MarketEvent::TaskExpired { task_id: ids[0] }
            ),
            (
                Phase::Initialization,
                MarketEvent::TaskExpired { task_id: ids[1] }
            ),
        ],
        "bounded at two per block"
    );
    let b5 = chain.produce_block();
    assert_eq!(
        b5.events[0].event,
        MarketEvent::TaskExpired { task_id: ids[2] }
    );
    chain.with_market(|m| {
        assert_eq!(m.account(&ALICE).free, free);
        assert!(m.open_tasks(Lane::Lane1).is_empty());
        assert!(
            ids.iter()
                .all(|id| m.task(*id).unwrap().status == TaskStatus::Expired)
        );
    });
    // An assigned task is not expired by the hook.
    let created = send(&alice, create_with(Lane::Lane1, "sha256", 1, UNIT)).await;
    chain.produce_block();
    let id = created_id(&created.await.unwrap());
    let assign = send(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    chain.produce_block();
    assign.await.unwrap();
    chain.produce_blocks(3);
    assert_eq!(status(&chain, id), TaskStatus::Assigned);
}

#[tokio::test]
async fn verification_deadline_hook_rejects() {
    let chain = chain();
    let id = assigned_task(&chain).await;
    let inc = ok(&chain.submitter(BOB), submit(id)).await;
    ok(&chain.submitter(DAVE), attest(id, 95)).await;
    let free = chain.with_market(|m| m.account(&ALICE).free);
    let target = inc.block.number + 101;
    let last = chain.produce_blocks(target - chain.head_number()).unwrap();
    assert_eq!(last.number, target);
    assert_eq!(
        last.events[0].event,
        MarketEvent::TaskRejected {
            task_id: id,
            executor: Some(BOB),
            average_score: Some(95),
            deadline_exceeded: true
        }
    );
    assert_eq!(chain.with_market(|m| m.account(&ALICE).free), free + UNIT);
}

#[tokio::test]
async fn lane0_preempts_assigned_lane1_work_bounded_per_block() {
    let chain = chain_with(|c| c.genesis.params.max_preemptions_per_block = 2);
    let alice = chain.submitter(ALICE);
    let bob = chain.submitter(BOB);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(assigned_task(&chain).await);
    }
    ok(&bob, MarketCall::StartTask { task_id: ids[0] }).await;
    let stake = chain.with_market(|m| m.executor(&BOB).unwrap().stake);
    let lane0 = created_id(&ok(&alice, create(Lane::Lane0, "video-render")).await);
    let b = chain.produce_block();
    assert_eq!(
        b.events.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        vec![
            MarketEvent::TaskFailed {
                task_id: ids[0],
                reason: FailReason::Preempted
            },
            MarketEvent::TaskFailed {
                task_id: ids[1],
                reason: FailReason::Preempted
            },
        ]
    );
    let b = chain.produce_block();
    assert_eq!(
        b.events[0].event,
        MarketEvent::TaskFailed {
            task_id: ids[2],
            reason: FailReason::Preempted
        }
    );
    chain.with_market(|m| {
        assert!(m.assigned_lane1_tasks().is_empty());
        assert_eq!(
            m.executor(&BOB).unwrap().stake,
            stake,
            "the hook does not slash"
        );
    });
    // A later submit for a preempted task fails.
    assert_eq!(
        err(&bob, submit(ids[0])).await,
        MarketError::TaskNotExecuting
    );
    // Once the Lane 0 task is taken, Lane 1 may proceed again.
    ok(&alice, MarketCall::AcceptAssignment { task_id: lane0 }).await;
    let next = assigned_task(&chain).await;
    ok(&bob, MarketCall::StartTask { task_id: next }).await;
}

#[tokio::test]
async fn nonces_are_per_account_and_checked() {
    let chain = chain_with(|c| c.block_mode = BlockMode::Manual);
    let alice = chain.submitter(ALICE);
    assert_eq!(chain.account_nonce(ALICE).await.unwrap(), 0);
    let a = send(&alice, create(Lane::Lane1, "sha256")).await;
    let b = send(&alice, create(Lane::Lane1, "sha256")).await;
    assert_eq!(chain.account_nonce(ALICE).await.unwrap(), 2, "pool-aware");
    assert_eq!(chain.account_nonce(BOB).await.unwrap(), 0);
    // Same nonce twice in the pool.
    match alice
        .submit_with_nonce(create(Lane::Lane1, "sha256"), 1)
        .await
    {
        Err(SubmitError::Invalid {
            reason: InvalidTransaction::PriorityTooLow { nonce: 1 },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A future nonce waits for the gap to fill.
    let future = alice.submit_with_nonce(create(Lane::Lane1, "sha256"), 3);
    let block = chain.produce_block();
    assert_eq!(
        block.events.len(),
        2,
        "both ready transactions in one block"
    );
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.nonce, a.index, b.nonce, b.index), (0, 0, 1, 1));
    assert_eq!(chain.pool_len(), 1, "nonce 3 still waits");
    let c = alice.submit_with_nonce(create(Lane::Lane1, "sha256"), 2);
    chain.produce_block();
    let (c, future) = (c.await.unwrap(), future.await.unwrap());
    assert_eq!((c.nonce, future.nonce), (2, 3));
    assert_eq!(c.block, future.block);
    // Stale.
    match alice
        .submit_with_nonce(create(Lane::Lane1, "sha256"), 1)
        .await
    {
        Err(SubmitError::Invalid {
            reason:
                InvalidTransaction::Stale {
                    nonce: 1,
                    expected: 4,
                },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A failed dispatch still uses its nonce.
    let bad = send(
        &alice,
        MarketCall::StartTask {
            task_id: TaskId(99),
        },
    )
    .await;
    chain.produce_block();
    assert!(bad.await.is_err());
    assert_eq!(chain.account_nonce(ALICE).await.unwrap(), 5);
}

#[tokio::test]
async fn storage_is_read_at_a_block() {
    let chain = chain();
    let alice = chain.submitter(ALICE);
    let created = ok(&alice, create(Lane::Lane1, "sha256")).await;
    let id = created_id(&created);
    let assigned = ok(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    let started = ok(&chain.submitter(BOB), MarketCall::StartTask { task_id: id }).await;

    let at = |inc: &nsn_lane1::chain::Inclusion| inc.block.hash;
    let genesis = chain
        .finalized_blocks(Some(0))
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chain.task(genesis.hash, id).await.unwrap(), None);
    assert_eq!(
        chain.task(at(&created), id).await.unwrap().unwrap().status,
        TaskStatus::Open
    );
    assert_eq!(
        chain.task(at(&assigned), id).await.unwrap().unwrap().status,
        TaskStatus::Assigned
    );
    assert_eq!(
        chain.task(at(&started), id).await.unwrap().unwrap().status,
        TaskStatus::Executing
    );
    assert_eq!(
        chain.assigned_lane1_tasks(at(&created)).await.unwrap(),
        vec![]
    );
    assert_eq!(
        chain.assigned_lane1_tasks(at(&started)).await.unwrap(),
        vec![id]
    );
    let unknown = nsn_lane1::chain::BlockHash([0xee; 32]);
    assert_eq!(
        chain.task(unknown, id).await.unwrap_err(),
        ChainError::UnknownBlock(unknown)
    );
    let head = chain.finalized_head().await.unwrap();
    assert_eq!(head, started.block);
}

#[tokio::test]
async fn block_stream_replays_without_gaps_then_follows() {
    let chain = chain();
    let alice = chain.submitter(ALICE);
    for _ in 0..3 {
        ok(&alice, create(Lane::Lane1, "sha256")).await;
    }
    let mut from_start = chain.finalized_blocks(Some(0));
    let mut new_only = chain.finalized_blocks(None);
    let mut parent = None;
    for n in 0..=3 {
        let b = from_start.next().await.unwrap().unwrap();
        assert_eq!(b.number, n);
        if let Some(p) = parent {
            assert_eq!(b.parent_hash, p);
        }
        parent = Some(b.hash);
    }
    let follow = tokio::spawn(async move { from_start.next().await });
    ok(&alice, create(Lane::Lane1, "sha256")).await;
    let b4 = tokio::time::timeout(std::time::Duration::from_secs(5), follow)
        .await
        .expect("stream followed the new block")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b4.number, 4);
    assert_eq!(b4.parent_hash, parent.unwrap());
    assert_eq!(new_only.next().await.unwrap().unwrap(), b4);

    chain.shutdown();
    assert!(new_only.next().await.is_none(), "stream ends at shutdown");
    assert_eq!(
        submit_err(&alice, create(Lane::Lane1, "sha256")).await,
        SubmitError::Closed
    );
}

#[tokio::test]
async fn shutdown_fails_pending_transactions() {
    let chain = chain_with(|c| c.block_mode = BlockMode::Manual);
    let pending = send(&chain.submitter(ALICE), create(Lane::Lane1, "sha256")).await;
    chain.shutdown();
    assert_eq!(pending.await.unwrap_err(), SubmitError::Closed);
}

#[tokio::test(start_paused = true)]
async fn interval_mode_builds_blocks_on_schedule() {
    let chain =
        chain_with(|c| c.block_mode = BlockMode::Interval(std::time::Duration::from_secs(6)));
    let alice = chain.submitter(ALICE);
    let mut blocks = chain.finalized_blocks(None);
    let a = send(&alice, create(Lane::Lane1, "sha256")).await;
    let b = send(&alice, create(Lane::Lane1, "sha256")).await;
    let start = tokio::time::Instant::now();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(6));
    assert_eq!(a.block, b.block, "both in the first block");
    assert_eq!(blocks.next().await.unwrap().unwrap().number, 1);
    let b2 = blocks.next().await.unwrap().unwrap();
    assert_eq!(b2.number, 2);
    assert!(b2.events.is_empty());
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(12));
    drop(chain);
    drop(alice);
}

#[test]
fn interval_mode_needs_a_runtime() {
    let config = nsn_lane1::chain::dev::DevConfig {
        block_mode: BlockMode::Interval(std::time::Duration::from_secs(1)),
        ..Default::default()
    };
    assert!(matches!(
        nsn_lane1::chain::dev::DevChain::new(config),
        Err(nsn_lane1::chain::dev::DevChainError::NoRuntime)
    ));
}

#[test]
fn bad_genesis_is_refused() {
    let mut config = nsn_lane1::chain::dev::DevConfig::default();
    config
        .genesis
        .executors
        .push((AccountId([7; 32]), UNIT, vec![Lane::Lane1]));
    assert!(matches!(
        nsn_lane1::chain::dev::DevChain::new(config),
        Err(nsn_lane1::chain::dev::DevChainError::Genesis(
            nsn_lane1::chain::dev::GenesisError::Stake(_)
        ))
    ));
    let config = nsn_lane1::chain::dev::DevConfig {
        auto_attest: Some(101),
        ..Default::default()
    };
    assert!(matches!(
        nsn_lane1::chain::dev::DevChain::new(config),
        Err(nsn_lane1::chain::dev::DevChainError::InvalidScore(101))
    ));
    let mut genesis = DevGenesis::development();
    genesis.renderers.push((
        "bad".into(),
        nsn_lane1::chain::dev::RendererInfo {
            lane: Lane::Lane0,
            deterministic: false,
            max_latency_ms: 1,
            vram_required_mb: 1,
        },
    ));
    let config = nsn_lane1::chain::dev::DevConfig {
        genesis,
        ..Default::default()
    };
    assert!(matches!(
        nsn_lane1::chain::dev::DevChain::new(config),
        Err(nsn_lane1::chain::dev::DevChainError::Genesis(
            nsn_lane1::chain::dev::GenesisError::Renderer {
                error: MarketError::RendererNotDeterministic,
                ..
            }
        ))
    ));
}
