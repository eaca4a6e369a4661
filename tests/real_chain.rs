//! Against the in-repo dev runtime executed by chopsticks (`tests/chain`).
//! Work in progress: runs only with `--features real-chain`, and needs
//! `npm ci` in `tests/chain` first.
#![cfg(feature = "real-chain")]

mod support;

use std::time::Duration;

use nsn_lane1::chain::subxt::{Backend, SubxtChain};
use nsn_lane1::task::TaskId;
use support::chopsticks;

#[tokio::test]
async fn reads_the_task_market_of_the_dev_runtime() {
    let node = chopsticks().await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let head = chain.finalized_head().await.expect("head");
    assert!(head.number >= 1, "chopsticks builds block 1 at start");
    assert_eq!(chain.task(head.hash, TaskId(0)).await.expect("read"), None);
}

#[tokio::test]
async fn a_task_created_through_subxt_reads_back_as_the_crate_decodes_it() {
    use nsn_lane1::chain::MarketCall;
    use nsn_lane1::task::{AccountId, Lane, Priority, TaskStatus, UNIT};

    let node = chopsticks().await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let alice = subxt_signer::sr25519::dev::alice();
    let cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let block = chain
        .submit_signed(
            &alice,
            &MarketCall::CreateTaskIntent {
                lane: Lane::Lane1,
                priority: Priority::High,
                model_requirements: b"sha256".to_vec(),
                input_cid: cid.as_bytes().to_vec(),
                compute_budget: 77,
                deadline_blocks: 50,
                escrow_amount: UNIT,
            },
        )
        .await
        .expect("create_task_intent lands");
    let task = chain
        .task(block, TaskId(0))
        .await
        .expect("read")
        .expect("task 0 exists");
    assert_eq!(task.requester, AccountId::ALICE);
    assert_eq!(task.status, TaskStatus::Open);
    assert_eq!(task.priority, Priority::High);
    assert_eq!(task.input_cid, cid.as_bytes());
    assert_eq!(task.compute_budget, 77);
    assert_eq!(task.escrow, UNIT);
}

#[tokio::test]
async fn the_block_stream_replays_from_a_number_and_decodes_market_events() {
    use futures::StreamExt;
    use nsn_lane1::chain::{ChainPort, MarketCall, MarketEvent};
    use nsn_lane1::task::{AccountId, Lane, Priority, UNIT};

    let node = chopsticks().await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let alice = subxt_signer::sr25519::dev::alice();
    assert_eq!(chain.account_nonce(AccountId::ALICE).await.unwrap(), 0);
    let create = |model: &[u8]| MarketCall::CreateTaskIntent {
        lane: Lane::Lane1,
        priority: Priority::Normal,
        model_requirements: model.to_vec(),
        input_cid: b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".to_vec(),
        compute_budget: 1,
        deadline_blocks: 50,
        escrow_amount: UNIT,
    };
    chain
        .submit_signed(&alice, &create(b"sha256"))
        .await
        .expect("first");
    chain
        .submit_signed(&alice, &create(b"noop"))
        .await
        .expect("second");
    assert_eq!(chain.account_nonce(AccountId::ALICE).await.unwrap(), 2);

    // From block 1: every block in order, the two creations decoded.
    let mut blocks = chain.finalized_blocks(Some(1));
    let mut created = Vec::new();
    let mut expect = 1;
    while created.len() < 2 {
        let block = tokio::time::timeout(Duration::from_secs(20), blocks.next())
            .await
            .expect("a block")
            .expect("stream open")
            .expect("block ok");
        assert_eq!(block.number, expect, "no gap");
        expect += 1;
        for r in block.events {
            if let MarketEvent::TaskCreated {
                task_id,
                requester,
                model_requirements,
                ..
            } = r.event
            {
                assert_eq!(requester, AccountId::ALICE);
                created.push((task_id, model_requirements));
            }
        }
    }
    assert_eq!(
        created,
        vec![
            (TaskId(0), b"sha256".to_vec()),
            (TaskId(1), b"noop".to_vec())
        ]
    );
    assert_eq!(chain.decode_failures(), 0);

    // Following: a new block arrives on the same stream.
    let follow = tokio::spawn(async move { blocks.next().await });
    chain
        .submit_signed(&alice, &create(b"uppercase"))
        .await
        .expect("third");
    let next = tokio::time::timeout(Duration::from_secs(20), follow)
        .await
        .expect("followed")
        .unwrap()
        .expect("open")
        .expect("ok");
    assert_eq!(next.number, expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_end_to_end_on_the_real_runtime() {
    use nsn_lane1::chain::MarketCall;
    use nsn_lane1::executor::ExecutorConfig;
    use nsn_lane1::lifecycle::TaskOutcome;
    use nsn_lane1::node::{Node, NodeParts};
    use nsn_lane1::task::{AccountId, Lane, Priority, TaskStatus, UNIT};
    use subxt_signer::sr25519::dev;

    let node = chopsticks().await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let sidecar = support::TestSidecar::start();
    let input = sidecar
        .sidecar
        .store()
        .put(b"hello, chain".to_vec())
        .unwrap();
    let lane1 = Node::spawn(
        ExecutorConfig::default(),
        NodeParts {
            port: chain.clone(),
            submit: chain.submitter(dev::bob()),
            account: AccountId::BOB,
            sidecar: sidecar.client(),
            models: None,
            metrics: Default::default(),
            checkpoint: None,
        },
    );
    tokio::time::timeout(Duration::from_secs(30), lane1.following())
        .await
        .expect("listener follows");

    let alice = dev::alice();
    chain
        .submit_signed(
            &alice,
            &MarketCall::CreateTaskIntent {
                lane: Lane::Lane1,
                priority: Priority::Normal,
                model_requirements: b"sha256".to_vec(),
                input_cid: input.as_bytes().to_vec(),
                compute_budget: 1,
                deadline_blocks: 100,
                escrow_amount: UNIT,
            },
        )
        .await
        .expect("created");
    chain
        .submit_signed(&alice, &MarketCall::AcceptAssignment { task_id: TaskId(0) })
        .await
        .expect("assigned to Bob, the only executor");

    let outcome = tokio::time::timeout(Duration::from_secs(60), lane1.board.wait_done(TaskId(0)))
        .await
        .expect("task done in time");
    let TaskOutcome::Submitted { output_cid, .. } = outcome else {
        panic!("{outcome:?}");
    };
    let head = chain.finalized_head().await.unwrap();
    let task = chain.task(head.hash, TaskId(0)).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Submitted);
    assert_eq!(task.output_cid.as_deref(), Some(output_cid.as_bytes()));

    // The validators attest; the chain pays.
    for v in [dev::dave(), dev::eve()] {
        chain
            .submit_signed(
                &v,
                &MarketCall::SubmitAttestation {
                    task_id: TaskId(0),
                    score: 90,
                    attestation_cid: None,
                },
            )
            .await
            .expect("attested");
    }
    let head = chain.finalized_head().await.unwrap();
    assert_eq!(
        chain
            .task(head.hash, TaskId(0))
            .await
            .unwrap()
            .unwrap()
            .status,
        TaskStatus::Verified
    );
    let report = lane1.stop().await.expect("stops");
    assert_eq!(report.submitted, 1);
}

#[tokio::test]
async fn dispatch_errors_come_back_by_variant_name() {
    use nsn_lane1::chain::{MarketCall, MarketError};
    let node = chopsticks().await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let err = chain
        .submit_signed(
            &subxt_signer::sr25519::dev::bob(),
            &MarketCall::StartTask { task_id: TaskId(9) },
        )
        .await
        .unwrap_err();
    assert_eq!(err.market_error(), Some(MarketError::TaskNotFound), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submitter_owns_the_nonce_and_pipelines_calls() {
    use futures::StreamExt;
    use nsn_lane1::chain::{ChainPort, MarketCall};
    use nsn_lane1::task::{AccountId, Lane, Priority, UNIT};
    use tower::ServiceExt;

    let node = chopsticks().await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let submitter = chain.submitter(subxt_signer::sr25519::dev::alice());
    let calls = (0..5).map(|i| MarketCall::CreateTaskIntent {
        lane: Lane::Lane1,
        priority: Priority::Normal,
        model_requirements: b"noop".to_vec(),
        input_cid: b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".to_vec(),
        compute_budget: i,
        deadline_blocks: 50,
        escrow_amount: UNIT,
    });
    // All five are sent before any is final.
    let results: Vec<_> = futures::stream::iter(calls)
        .map(|call| submitter.clone().oneshot(call))
        .buffer_unordered(5)
        .collect()
        .await;
    let mut nonces: Vec<u64> = results
        .into_iter()
        .map(|r| r.expect("included").nonce)
        .collect();
    nonces.sort();
    assert_eq!(nonces, vec![0, 1, 2, 3, 4]);
    assert_eq!(chain.account_nonce(AccountId::ALICE).await.unwrap(), 5);
    let head = chain.finalized_head().await.unwrap();
    for id in 0..5 {
        assert!(
            chain.task(head.hash, TaskId(id)).await.unwrap().is_some(),
            "task {id}"
        );
    }
}
