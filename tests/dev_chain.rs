//! The embedded dev chain's own side: what only it can show or set — exact
//! payment arithmetic (it charges no fees), auto-attestation, bounds set by
//! its parameters (hooks per block, the renderer registry, stake caps),
//! argument bounds, executor selection over its genesis, nonces, storage
//! history, block streams and block modes. The pallet's rules themselves
//! run in the conformance suite (`tests/conformance.rs`), on this chain and
//! on the dev runtime alike.
#![cfg(feature = "dev")]

mod support;

use futures::StreamExt;
use nsn_lane1::chain::dev::{BlockMode, DevGenesis, Market, SlashCause, TREASURY};
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
async fn the_renderer_registry_is_bounded() {
    // The registry's rules are in the conformance suite; the bound needs a
    // small `MaxRegisteredRenderers`, which only the dev chain can set.
    let chain = chain_with(|c| c.genesis.params.max_registered_renderers = 8);
    let sudo = chain.sudo();
    // The development genesis has 7 renderers; the eighth fills the registry.
    let inc = ok(&sudo, register("eighth", Lane::Lane0, true, 15_000, 0)).await;
    assert_eq!(
        err(&sudo, register("one-more", Lane::Lane1, true, 1, 1)).await,
        MarketError::RendererRegistryFull
    );
    let renderers = chain.with_market(|m| m.renderers().clone());
    let eighth = &renderers[b"eighth".as_slice()];
    assert_eq!(
        eighth.registered_at, inc.block.number,
        "registered_at is the block of the call"
    );
    assert_eq!(
        renderers[b"sha256".as_slice()].registered_at,
        0,
        "genesis renderers"
    );
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
    // All three were created in block 1 with deadline 2. The deployed pallet
    // expires an open task in the block whose number is its deadline.
    let b2 = chain.produce_block();
    let expired: Vec<_> = b2
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
    let b3 = chain.produce_block();
    assert_eq!(
        b3.events[0].event,
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
    let created = send(&alice, create_with(Lane::Lane1, "sha256", 2, UNIT)).await;
    chain.produce_block();
    let id = created_id(&created.await.unwrap());
    let assign = send(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    chain.produce_block();
    assign.await.unwrap();
    chain.produce_blocks(3);
    assert_eq!(status(&chain, id), TaskStatus::Assigned);
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
        // The deployed pallet's hook slashes each preempted task's executor
        // (TaskAbandonmentSlash), counted apart from slashes its calls cause.
        assert_eq!(m.executor(&BOB).unwrap().stake, stake - 3 * 5 * UNIT);
        let slashes = m.slashes(&BOB);
        assert_eq!(slashes.get(&SlashCause::PreemptionHook), Some(&3));
        assert_eq!(m.slashes_by_own_calls(&BOB), 0);
    });
    // A later submit for a preempted task fails.
    assert_eq!(
        err(&bob, submit(ids[0])).await,
        MarketError::TaskNotAssigned
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
    let before = chain.best_head().await.unwrap();
    assert_eq!(
        chain.account_nonce_at(before.hash, ALICE).await.unwrap(),
        0,
        "pooled calls are in no block's state"
    );
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
    assert_eq!(chain.account_nonce_at(block.hash, ALICE).await.unwrap(), 2);
    assert_eq!(
        chain.account_nonce_at(before.hash, ALICE).await.unwrap(),
        0,
        "read at the block asked for"
    );
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
    // Blocks as they are built (finality trails them by two in this mode).
    let mut blocks = chain.best_blocks(None);
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
            registered_at: 0,
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

#[tokio::test]
async fn finality_trails_the_best_block_by_the_lag() {
    let chain = chain_with(|c| {
        c.block_mode = BlockMode::Manual;
        c.finality_lag = Some(2);
    });
    let mut best = chain.best_blocks(Some(1));
    let mut finalized = chain.finalized_blocks(Some(1));
    // A transaction is included in the next best block, final two later.
    let created = send(&chain.submitter(ALICE), create(Lane::Lane1, "sha256")).await;
    chain.produce_block();
    let inc = created.await.expect("included in a best block");
    assert_eq!(inc.block.number, 1);
    assert_eq!((chain.head_number(), chain.finalized_number()), (1, 0));
    assert_eq!(chain.best_head().await.unwrap().number, 1);
    assert_eq!(chain.finalized_head().await.unwrap().number, 0);
    let id = created_id(&inc);
    // The best block's state has the task; the finalized head's does not yet.
    let fin = chain.finalized_head().await.unwrap();
    assert_eq!(chain.task(fin.hash, id).await.unwrap(), None);
    assert_eq!(
        chain
            .task(inc.block.hash, id)
            .await
            .unwrap()
            .map(|t| t.status),
        Some(TaskStatus::Open)
    );
    assert_eq!(best.next().await.unwrap().unwrap().number, 1);
    chain.produce_blocks(2);
    assert_eq!((chain.head_number(), chain.finalized_number()), (3, 1));
    let first_final = finalized.next().await.unwrap().unwrap();
    assert_eq!(
        first_final.block_ref(),
        inc.block,
        "the same block, now final"
    );
    assert_eq!(best.next().await.unwrap().unwrap().number, 2);
    assert_eq!(best.next().await.unwrap().unwrap().number, 3);
    // Nothing past the finalized head on the finalized stream.
    assert!(futures::FutureExt::now_or_never(finalized.next()).is_none());
    assert_eq!(chain.finalize_to(3), 3);
    assert_eq!(chain.head_number(), 5);
}

#[tokio::test]
async fn interval_mode_finalizes_two_blocks_behind_by_default() {
    let chain =
        chain_with(|c| c.block_mode = BlockMode::Interval(std::time::Duration::from_millis(5)));
    let mut finalized = chain.finalized_blocks(Some(1));
    within("a finalized block", finalized.next()).await;
    assert!(chain.head_number() >= chain.finalized_number() + 2);
}

#[tokio::test]
async fn a_fork_retracts_best_blocks_and_never_final_ones() {
    use nsn_lane1::chain::dev::{ForkError, Origin};
    let chain = chain_with(|c| {
        c.block_mode = BlockMode::Manual;
        c.finality_lag = Some(2);
    });
    chain.enable_forks(3);
    let alice = chain.submitter(ALICE);
    let created = send(&alice, create(Lane::Lane1, "sha256")).await;
    chain.produce_block();
    let inc = created.await.unwrap();
    let id = created_id(&inc);
    let accepted = send(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    chain.produce_block();
    accepted.await.unwrap();
    chain.produce_block();
    assert_eq!((chain.head_number(), chain.finalized_number()), (3, 1));
    assert_eq!(status(&chain, id), TaskStatus::Assigned);
    let mut best = chain.best_blocks(Some(1));
    let mut finalized = chain.finalized_blocks(Some(1));
    for n in 1..=3 {
        assert_eq!(best.next().await.unwrap().unwrap().number, n);
    }
    let old2 = chain.best_head().await.unwrap();

    // Finality never goes back: block 1 is final.
    assert!(matches!(
        chain.fork(3, |_, _| true),
        Err(ForkError::Final { .. })
    ));
    // Blocks 2 and 3 go; the assignment is not resubmitted.
    let fork = chain
        .fork(2, |_, call| {
            !matches!(call, MarketCall::AcceptAssignment { .. })
        })
        .unwrap();
    assert_eq!(
        fork.retracted.iter().map(|b| b.number).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(
        fork.enacted.iter().map(|b| b.number).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(fork.discarded.len(), 1);
    assert_eq!(fork.discarded[0].origin, Origin::Signed(ALICE));
    assert_ne!(fork.enacted[1].hash, old2.hash, "another block at 3");
    // The new branch has no assignment; the retracted block is unknown.
    assert_eq!(status(&chain, id), TaskStatus::Open);
    assert!(matches!(
        chain.task(old2.hash, id).await,
        Err(ChainError::UnknownBlock(_))
    ));
    assert!(
        chain
            .extrinsics()
            .iter()
            .all(|x| !matches!(x.call, MarketCall::AcceptAssignment { .. })),
        "the chain's record is the best chain's"
    );
    assert_eq!(chain.retracted_extrinsics().len(), 1);
    // The best stream goes on from the new branch's first block.
    let again = best.next().await.unwrap().unwrap();
    assert_eq!((again.number, again.hash), (2, fork.enacted[0].hash));
    // Finalized blocks come once each, on the branch that won.
    assert_eq!(chain.finalized_number(), 2);
    let f1 = finalized.next().await.unwrap().unwrap();
    let f2 = finalized.next().await.unwrap().unwrap();
    assert_eq!((f1.number, f2.hash), (1, fork.enacted[0].hash));
    // Alice's nonce went back with the block: her next call takes it.
    assert_eq!(chain.account_nonce(ALICE).await.unwrap(), 1);
    let again = send(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    chain.produce_block();
    again.await.unwrap();
    assert_eq!(status(&chain, id), TaskStatus::Assigned);
}

#[tokio::test]
async fn a_forks_resubmitted_calls_land_on_the_new_branch_and_finality_can_stall() {
    let chain = chain_with(|c| {
        c.block_mode = BlockMode::Manual;
        c.finality_lag = Some(1);
    });
    chain.enable_forks(2);
    let alice = chain.submitter(ALICE);
    let created = send(&alice, create(Lane::Lane1, "sha256")).await;
    chain.produce_block();
    let id = created_id(&created.await.unwrap());
    chain.stall_finality(true);
    let accepted = send(&alice, MarketCall::AcceptAssignment { task_id: id }).await;
    chain.produce_block();
    accepted.await.unwrap();
    chain.produce_blocks(5);
    assert_eq!(chain.finalized_number(), 0, "finality stalled");
    // The pool resubmits what the retracted blocks held.
    let fork = chain.fork(2, |_, _| true).unwrap();
    assert!(fork.discarded.is_empty());
    assert_eq!(status(&chain, id), TaskStatus::Assigned);
    assert!(matches!(
        chain.fork(3, |_, _| true),
        Err(nsn_lane1::chain::dev::ForkError::TooDeep { .. })
    ));
    chain.stall_finality(false);
    chain.produce_block();
    assert_eq!(chain.finalized_number(), chain.head_number() - 1);
}
