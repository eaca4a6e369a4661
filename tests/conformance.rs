//! Conformance: the same scenarios against the embedded dev chain and the
//! dev runtime under chopsticks, through the same port and submitter
//! interfaces; their transcripts — every call's events, or its error by
//! variant name — must be equal.
#![cfg(feature = "real-chain")]

mod support;

use nsn_lane1::chain::dev::{DevChain, DevConfig};
use nsn_lane1::chain::subxt::{Backend, SubxtChain};
use nsn_lane1::chain::{Inclusion, MarketCall, MarketError, MarketEvent, SubmitError};
use nsn_lane1::task::{FailReason, Lane, Priority, TaskId, UNIT};
use subxt_signer::sr25519::dev;
use tower::{Service, ServiceExt};

/// One call's result: its events (block-relative numbers made relative to
/// the block), or its task-market error.
type Step = Result<Vec<MarketEvent>, Option<MarketError>>;

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
        Err(e) => Err(e.market_error()),
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
        // Lane 0 work preempts assigned Lane 1 work in the next block.
        (
            "create",
            step(&alice, create(Lane::Lane1, "uppercase")).await,
        ),
        (
            "assign",
            step(&alice, MarketCall::AcceptAssignment { task_id: TaskId(2) }).await,
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
            step(&alice, MarketCall::AcceptAssignment { task_id: TaskId(4) }).await,
        ),
    ]
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

    // The hook's work is in storage: every task ends in the same status.
    use nsn_lane1::chain::ChainPort;
    let dev_head = dev_chain.finalized_head().await.unwrap();
    let real_head = chain.finalized_head().await.unwrap();
    for id in 0..5 {
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
            .task(real_head.hash, TaskId(2))
            .await
            .unwrap()
            .map(|t| t.status),
        Some(nsn_lane1::task::TaskStatus::Failed),
        "the preemption hook failed the assigned Lane 1 task"
    );
}
