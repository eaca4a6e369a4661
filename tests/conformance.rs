//! Conformance: the same scenarios against the embedded dev chain and the
//! dev runtime under chopsticks, through the same port and submitter
//! interfaces; their transcripts — every call's events, or its error by
//! variant name — must be equal.
#![cfg(feature = "real-chain")]

mod support;

use nsn_lane1::chain::dev::{DevChain, DevConfig};
use nsn_lane1::chain::subxt::{Backend, SubxtChain};
use nsn_lane1::chain::{DispatchError, Inclusion, MarketCall, MarketEvent, SubmitError};
use nsn_lane1::task::{FailReason, Lane, Priority, TaskId, UNIT};
use subxt_signer::sr25519::dev;
use tower::{Service, ServiceExt};

/// One call's result: its events (block-relative numbers made relative to
/// the block), or its task-market error.
type Step = Result<Vec<MarketEvent>, String>;

/// Makes block numbers inside events relative to the inclusion block, so two
/// chains at different heights compare equal.
fn relative(inc: &Inclusion) -> Vec<MarketEvent> {
    let n = inc.block.number;
    inc.events
        .iter()
        .cloned()
        .map(|e| match e {
            MarketEvent::TaskCreated {
                task_id,
                requester,
                escrow,
                deadline,
                lane,
                priority,
                model_requirements,
            } => MarketEvent::TaskCreated {
                task_id,
                requester,
                escrow,
                deadline: deadline - n,
                lane,
                priority,
                model_requirements,
            },
            MarketEvent::TaskSubmitted {
                task_id,
                executor,
                output_cid,
                attestation_cid,
                verification_deadline,
                required_quorum,
            } => MarketEvent::TaskSubmitted {
                task_id,
                executor,
                output_cid,
                attestation_cid,
                verification_deadline: verification_deadline - n,
                required_quorum,
            },
            other => other,
        })
        .collect()
}

async fn step<S>(who: &S, call: MarketCall) -> Step
where
    S: Service<MarketCall, Response = Inclusion, Error = SubmitError> + Clone,
{
    match who.clone().oneshot(call).await {
        Ok(inc) => Ok(relative(&inc)),
        Err(e) => Err(match (&e, e.market_error()) {
            (_, Some(m)) => format!("{m:?}"),
            (
                SubmitError::Dispatch {
                    error: DispatchError::BadOrigin,
                    ..
                },
                None,
            ) => "BadOrigin".to_owned(),
            _ => format!("not a task-market error: {e}"),
        }),
    }
}

fn create(lane: Lane, model: &str) -> MarketCall {
    MarketCall::CreateTaskIntent {
        lane,
        priority: Priority::Normal,
        model_requirements: model.as_bytes().to_vec(),
        input_cid: b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".to_vec(),
        compute_budget: 5,
        deadline_blocks: 500,
        escrow_amount: UNIT,
    }
}

/// The scenarios, with Alice requesting, Bob executing, Charlie a stranger,
/// Dave and Eve validating.
async fn scenarios<S>(alice: S, bob: S, charlie: S, dave: S, eve: S) -> Vec<(&'static str, Step)>
where
    S: Service<MarketCall, Response = Inclusion, Error = SubmitError> + Clone,
{
    let t0 = TaskId(0);
    let t1 = TaskId(1);
    let submit = |task_id| MarketCall::SubmitResult {
        task_id,
        output_cid: b"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG".to_vec(),
        attestation_cid: None,
    };
    let attest = |task_id, score| MarketCall::SubmitAttestation {
        task_id,
        score,
        attestation_cid: None,
    };
    vec![
        // A lifecycle to verified, with the errors met on the way.
        ("create", step(&alice, create(Lane::Lane1, "sha256")).await),
        (
            "create for the wrong lane",
            step(&alice, create(Lane::Lane0, "sha256")).await,
        ),
        (
            "start before assignment",
            step(&bob, MarketCall::StartTask { task_id: t0 }).await,
        ),
        (
            "assign",
            step(&alice, MarketCall::AcceptAssignment { task_id: t0 }).await,
        ),
        (
            "assign again",
            step(&alice, MarketCall::AcceptAssignment { task_id: t0 }).await,
        ),
        (
            "start by a stranger",
            step(&charlie, MarketCall::StartTask { task_id: t0 }).await,
        ),
        (
            "start",
            step(&bob, MarketCall::StartTask { task_id: t0 }).await,
        ),
        ("submit", step(&bob, submit(t0)).await),
        ("attest by a stranger", step(&charlie, attest(t0, 90)).await),
        ("attest", step(&dave, attest(t0, 80)).await),
        ("attest twice", step(&dave, attest(t0, 80)).await),
        ("attest to quorum", step(&eve, attest(t0, 91)).await),
        (
            "finalize a verified task",
            step(&charlie, MarketCall::FinalizeTask { task_id: t0 }).await,
        ),
        // Failure by the executor, slashed.
        ("create", step(&alice, create(Lane::Lane1, "noop")).await),
        (
            "assign",
            step(&alice, MarketCall::AcceptAssignment { task_id: t1 }).await,
        ),
        (
            "fail",
            step(
                &bob,
                MarketCall::FailTask {
                    task_id: t1,
                    reason: FailReason::ExecutorFailed,
                },
            )
            .await,
        ),
        (
            "fail again",
            step(
                &bob,
                MarketCall::FailTask {
                    task_id: t1,
                    reason: FailReason::Other,
                },
            )
            .await,
        ),
        // Errors by variant along a third task's life.
        ("create", step(&alice, create(Lane::Lane1, "sha256")).await),
        ("submit while open", step(&bob, submit(TaskId(2))).await),
        (
            "assign",
            step(&alice, MarketCall::AcceptAssignment { task_id: TaskId(2) }).await,
        ),
        (
            "attest before submission",
            step(&dave, attest(TaskId(2), 70)).await,
        ),
        ("submit", step(&bob, submit(TaskId(2))).await),
        (
            "attest with a score over 100",
            step(&dave, attest(TaskId(2), 101)).await,
        ),
        (
            "attest with an empty attestation cid",
            step(
                &dave,
                MarketCall::SubmitAttestation {
                    task_id: TaskId(2),
                    score: 70,
                    attestation_cid: Some(Vec::new()),
                },
            )
            .await,
        ),
        (
            "finalize while verification is pending",
            step(&charlie, finalize(TaskId(2))).await,
        ),
        (
            "fail a submitted task (the pallet allows it)",
            step(
                &bob,
                MarketCall::FailTask {
                    task_id: TaskId(2),
                    reason: FailReason::Other,
                },
            )
            .await,
        ),
        (
            "create without escrow",
            step(&alice, with_escrow(create(Lane::Lane1, "sha256"), 0)).await,
        ),
        // Lane 0 work preempts assigned Lane 1 work in the next block.
        (
            "create",
            step(&alice, create(Lane::Lane1, "uppercase")).await,
        ),
        (
            "assign",
            step(&alice, MarketCall::AcceptAssignment { task_id: TaskId(3) }).await,
        ),
        (
            "create lane 0",
            step(&alice, create(Lane::Lane0, "video-render")).await,
        ),
        (
            "a block passes",
            step(
                &charlie,
                MarketCall::FinalizeTask {
                    task_id: TaskId(99),
                },
            )
            .await,
        ),
        (
            "lane 1 must wait",
            step(&alice, create(Lane::Lane1, "sha256")).await,
        ),
        (
            "assign while lane 0 is open",
            step(&alice, MarketCall::AcceptAssignment { task_id: TaskId(5) }).await,
        ),
        // Expiry: a task whose deadline passes is expired by the hook.
        (
            "create with a zero deadline",
            step(&alice, with_deadline(create(Lane::Lane1, "sha256"), 0)).await,
        ),
        (
            "create with a short deadline",
            step(&alice, with_deadline(create(Lane::Lane1, "sha256"), 2)).await,
        ),
        ("a block passes", step(&charlie, finalize(TaskId(98))).await),
        ("a block passes", step(&charlie, finalize(TaskId(98))).await),
        ("a block passes", step(&charlie, finalize(TaskId(98))).await),
        (
            "assign an expired task",
            step(&alice, MarketCall::AcceptAssignment { task_id: TaskId(6) }).await,
        ),
        (
            "start an expired task",
            step(&bob, MarketCall::StartTask { task_id: TaskId(6) }).await,
        ),
        // Authorization: calls from the wrong account or origin.
        ("submit by a stranger", step(&charlie, submit(t0)).await),
        (
            "fail another's task",
            step(
                &charlie,
                MarketCall::FailTask {
                    task_id: TaskId(3),
                    reason: FailReason::Other,
                },
            )
            .await,
        ),
        (
            "register a renderer without root",
            step(
                &alice,
                MarketCall::RegisterRenderer {
                    renderer_id: b"my-renderer".to_vec(),
                    lane: Lane::Lane1,
                    deterministic: true,
                    max_latency_ms: 100,
                    vram_required_mb: 1_000,
                },
            )
            .await,
        ),
        (
            "deregister a renderer without root",
            step(
                &alice,
                MarketCall::DeregisterRenderer {
                    renderer_id: b"sha256".to_vec(),
                },
            )
            .await,
        ),
        (
            "attest to an unknown task",
            step(&dave, attest(TaskId(77), 50)).await,
        ),
        (
            "an escrow above the balance",
            step(
                &charlie,
                with_escrow(create(Lane::Lane1, "sha256"), u128::MAX / 2),
            )
            .await,
        ),
    ]
}

fn finalize(task_id: TaskId) -> MarketCall {
    MarketCall::FinalizeTask { task_id }
}

fn with_deadline(mut call: MarketCall, blocks: u32) -> MarketCall {
    if let MarketCall::CreateTaskIntent {
        deadline_blocks, ..
    } = &mut call
    {
        *deadline_blocks = blocks;
    }
    call
}

fn with_escrow(mut call: MarketCall, amount: u128) -> MarketCall {
    if let MarketCall::CreateTaskIntent { escrow_amount, .. } = &mut call {
        *escrow_amount = amount;
    }
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_chain_and_the_runtime_agree() {
    let config = DevConfig {
        auto_attest: None,
        ..DevConfig::default()
    };
    let dev_chain = DevChain::new(config).unwrap();
    use nsn_lane1::task::AccountId;
    let embedded = scenarios(
        dev_chain.submitter(AccountId::ALICE),
        dev_chain.submitter(AccountId::BOB),
        dev_chain.submitter(AccountId::CHARLIE),
        dev_chain.submitter(AccountId::DAVE),
        dev_chain.submitter(AccountId::EVE),
    )
    .await;

    let node = support::chopsticks().await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let real = scenarios(
        chain.submitter(dev::alice()),
        chain.submitter(dev::bob()),
        chain.submitter(dev::charlie()),
        chain.submitter(dev::dave()),
        chain.submitter(dev::eve()),
    )
    .await;

    for ((what, a), (_, b)) in embedded.iter().zip(&real) {
        assert_eq!(a, b, "{what}: embedded dev chain vs runtime");
    }
    assert_eq!(embedded.len(), real.len());
    // The scenarios reach what they are about (on both, as they agree).
    let outcome = |name: &str| {
        real.iter()
            .find(|(what, _)| *what == name)
            .map(|(_, step)| step.clone())
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    assert_eq!(
        outcome("register a renderer without root"),
        Err("BadOrigin".to_owned())
    );
    assert!(outcome("create with a zero deadline").is_err());
    assert!(outcome("start an expired task").is_err());
    assert!(outcome("submit by a stranger").is_err());
    assert!(outcome("an escrow above the balance").is_err());
    assert!(outcome("create with a short deadline").is_ok());
    let reached: std::collections::BTreeSet<&str> = real
        .iter()
        .filter_map(|(_, step)| step.as_ref().err().map(String::as_str))
        .collect();
    // Seventeen of the pallet's error variants, and a bad origin.
    let expected = [
        "BadOrigin",
        "DuplicateAttestation",
        "InsufficientBalance",
        "InsufficientEscrow",
        "InvalidAttestationCid",
        "InvalidAttestationScore",
        "InvalidDeadline",
        "Lane0Priority",
        "NotExecutor",
        "NotValidator",
        "RendererLaneMismatch",
        "TaskAlreadyAssigned",
        "TaskNotAssigned",
        "TaskNotExecuting",
        "TaskNotFound",
        "TaskNotOpen",
        "TaskNotSubmitted",
        "VerificationPending",
    ];
    assert_eq!(reached, expected.into_iter().collect(), "errors reached");
    for failing in [
        "submit while open",
        "attest before submission",
        "attest with an empty attestation cid",
        "attest with a score over 100",
        "finalize while verification is pending",
        "create without escrow",
    ] {
        assert!(
            outcome(failing).is_err(),
            "{failing}: {:?}",
            outcome(failing)
        );
    }
    assert!(outcome("submit").is_ok());

    // The hook's work is in storage: every task ends in the same status.
    use nsn_lane1::chain::ChainPort;
    let dev_head = dev_chain.finalized_head().await.unwrap();
    let real_head = chain.finalized_head().await.unwrap();
    for id in 0..7 {
        let d = dev_chain
            .task(dev_head.hash, TaskId(id))
            .await
            .unwrap()
            .map(|t| t.status);
        let r = chain
            .task(real_head.hash, TaskId(id))
            .await
            .unwrap()
            .map(|t| t.status);
        assert_eq!(d, r, "status of task {id}");
    }
    assert_eq!(
        chain
            .task(real_head.hash, TaskId(3))
            .await
            .unwrap()
            .map(|t| t.status),
        Some(nsn_lane1::task::TaskStatus::Failed),
        "the preemption hook failed the assigned Lane 1 task"
    );
    assert_eq!(
        chain
            .task(real_head.hash, TaskId(6))
            .await
            .unwrap()
            .map(|t| t.status),
        Some(nsn_lane1::task::TaskStatus::Expired),
        "the expiry hook expired the task whose deadline passed"
    );
}
