//! Against the in-repo dev runtime executed by chopsticks (`tests/chain`).
//! Runs with the `real-chain` feature (on by default), and needs
//! `npm ci` in `tests/chain` first.
#![cfg(all(feature = "real-chain", feature = "dev"))]

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
    // Alice's nonce in the state of the block that holds her first call.
    use nsn_lane1::chain::ChainPort;
    assert_eq!(
        chain
            .account_nonce_at(block, AccountId::ALICE)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        chain.account_nonce_at(block, AccountId::BOB).await.unwrap(),
        0
    );
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
        for r in block.events.iter() {
            if let MarketEvent::TaskCreated {
                task_id,
                requester,
                model_requirements,
                ..
            } = &r.event
            {
                assert_eq!(*requester, AccountId::ALICE);
                created.push((*task_id, model_requirements.clone()));
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
        NodeParts::new(
            chain.clone(),
            chain.submitter(dev::bob()),
            AccountId::BOB,
            sidecar.client(),
        ),
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
    use nsn_lane1::chain::SubmitExt;
    use nsn_lane1::chain::{ChainPort, MarketCall};
    use nsn_lane1::task::{AccountId, Lane, Priority, UNIT};

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
        .map(|call| submitter.clone().submit(call))
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

/// Posts one Lane 1 task for `model` per input (all at once, as Alice),
/// with the input in the sidecar's store, and has each assigned.
async fn post_and_assign(
    chain: &SubxtChain,
    store: &nsn_lane1::sidecar::store::BlobStore,
    model: &str,
    inputs: Vec<Vec<u8>>,
) -> Vec<TaskId> {
    use nsn_lane1::chain::MarketCall;
    use nsn_lane1::chain::SubmitExt;
    use nsn_lane1::task::{Lane, Priority, UNIT};
    let alice = chain.submitter(subxt_signer::sr25519::dev::alice());
    let creates = inputs.into_iter().map(|input| {
        let cid = store.put(input).unwrap();
        alice.clone().submit(MarketCall::CreateTaskIntent {
            lane: Lane::Lane1,
            priority: Priority::Normal,
            model_requirements: model.as_bytes().to_vec(),
            input_cid: cid.as_bytes().to_vec(),
            compute_budget: 1,
            deadline_blocks: 1_000,
            escrow_amount: UNIT,
        })
    });
    let mut ids = Vec::new();
    for r in futures::future::join_all(creates).await {
        ids.push(support::created_id(&r.expect("created")));
    }
    let accepts = ids.iter().map(|id| {
        alice
            .clone()
            .submit(MarketCall::AcceptAssignment { task_id: *id })
    });
    for r in futures::future::join_all(accepts).await {
        r.expect("assigned");
    }
    ids
}

/// Waits (at most `secs`) until every task in `ids` has had an event that
/// `pick` recognises, reading finalized blocks from `from`.
async fn wait_for_events(
    chain: &SubxtChain,
    from: u32,
    ids: &[TaskId],
    secs: u64,
    pick: impl Fn(&nsn_lane1::chain::MarketEvent) -> Option<TaskId>,
) -> u32 {
    use futures::StreamExt;
    use nsn_lane1::chain::ChainPort;
    let mut waiting: std::collections::HashSet<TaskId> = ids.iter().copied().collect();
    let mut blocks = chain.finalized_blocks(Some(from));
    tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(block) = blocks.next().await {
            let block = block.expect("block");
            for r in block.events.iter() {
                if let Some(id) = pick(&r.event) {
                    waiting.remove(&id);
                }
            }
            if waiting.is_empty() {
                return block.number;
            }
        }
        panic!("block stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("events for {waiting:?} did not come within {secs} s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_n_tasks_to_verified_on_the_real_runtime() {
    let node = chopsticks().await;
    binary_runs_tasks_to_verified(&node.url, Backend::Legacy, 6).await;
}

/// `nsn-lane1 run --chain-backend default` against a node that serves the
/// new JSON-RPC (polkadot-omni-node running the parachain flavour, 500 ms
/// blocks): every task verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_node_the_binary_runs_tasks_to_verified_through_the_default_backend() {
    let test = "on_a_real_node_the_binary_runs_tasks_to_verified_through_the_default_backend";
    if let Some(node) = support::omni_node(test, "nsn-dev-para-spec.json", 500).await {
        binary_runs_tasks_to_verified(&node.url, Backend::Default, 12).await;
    }
}

/// As above, through the legacy backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_node_the_binary_runs_tasks_to_verified_through_the_legacy_backend() {
    let test = "on_a_real_node_the_binary_runs_tasks_to_verified_through_the_legacy_backend";
    if let Some(node) = support::omni_node(test, "nsn-dev-para-spec.json", 500).await {
        binary_runs_tasks_to_verified(&node.url, Backend::Legacy, 12).await;
    }
}

/// A node away for longer than the chain node keeps state (here 32
/// blocks, `--state-pruning 32`; a full node's default is 256) comes back
/// to blocks it cannot read: it skips them, resumes from the chain's state
/// and runs the task assigned to it meanwhile, instead of retrying the
/// pruned block for as long as it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_node_a_node_back_after_the_state_was_pruned_resumes_from_state() {
    use nsn_lane1::chain::MarketEvent;
    let test = "on_a_real_node_a_node_back_after_the_state_was_pruned_resumes_from_state";
    let args = ["--state-pruning", "32"];
    let Some(node) = support::omni_node_with(test, "nsn-dev-para-spec.json", 100, &args).await
    else {
        return;
    };
    let chain = SubxtChain::connect(&node.url, Backend::Default)
        .await
        .expect("connects");
    let sidecar = support::TestSidecar::start();
    let dir = std::env::temp_dir().join(format!("nsn-lane1-pruned-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("bob.key");
    support::write_key_file(&key, "//Bob\n");
    let state = dir.join("last-block");
    let _ = std::fs::remove_file(&state);
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_nsn-lane1"))
            .args(["run", "--chain", &node.url, "--chain-backend", "default"])
            .args(["--sidecar", &sidecar.endpoint()])
            .arg("--key-file")
            .arg(&key)
            .arg("--state-file")
            .arg(&state)
            .env("NSN_LANE1_LOG", "error")
            .env("NSN_LANE1_TELEMETRY_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts")
    };
    let submitted = |e: &MarketEvent| match e {
        MarketEvent::TaskSubmitted { task_id, .. } => Some(*task_id),
        _ => None,
    };

    let mut first = run();
    let start = chain.finalized_head().await.unwrap().number;
    let ids = post_and_assign(
        &chain,
        sidecar.sidecar.store(),
        "sha256",
        vec![b"1".to_vec()],
    )
    .await;
    wait_for_events(&chain, start, &ids, 60, submitted).await;
    first.kill().await.expect("stops");
    let recorded_block = || -> u32 {
        std::fs::read_to_string(&state)
            .expect("a recorded block")
            .trim()
            .parse()
            .expect("a number")
    };
    let recorded = recorded_block();

    // Away: a task is assigned to the node, and the chain moves on past
    // what its node keeps.
    let missed = post_and_assign(
        &chain,
        sidecar.sidecar.store(),
        "sha256",
        vec![b"2".to_vec()],
    )
    .await;
    // Headers only (a block's events could be pruned before they are read).
    let mut heads = chain
        .rpc()
        .subscribe::<serde_json::Value>(
            "chain_subscribeFinalizedHeads",
            subxt::rpcs::client::rpc_params![],
            "chain_unsubscribeFinalizedHeads",
        )
        .await
        .expect("finalized heads");
    within_secs(60, async {
        while let Some(head) = heads.next().await {
            let head = head.expect("a header");
            let number = head["number"]
                .as_str()
                .and_then(|n| u32::from_str_radix(n.trim_start_matches("0x"), 16).ok())
                .expect("a block number");
            if number > recorded + 64 {
                return;
            }
        }
    })
    .await;

    let back = chain.finalized_head().await.unwrap().number;
    let mut second = run();
    wait_for_events(&chain, back, &missed, 60, submitted).await;
    assert_eq!(
        second.try_wait().expect("status"),
        None,
        "the node keeps running"
    );
    assert!(
        recorded_block() > recorded + 64,
        "recorded past the pruned blocks"
    );
    second.kill().await.expect("stops");
}

/// Runs the binary against the node at `url` through `backend` (as Bob,
/// the only executor), posts `n` tasks as a requester would (through the
/// same backend), and checks each ends verified and the state file
/// records the blocks handled.
async fn binary_runs_tasks_to_verified(url: &str, backend: Backend, n: usize) {
    use nsn_lane1::chain::SubmitExt;
    use nsn_lane1::chain::{MarketCall, MarketEvent};
    use nsn_lane1::task::TaskStatus;
    use subxt_signer::sr25519::dev;

    let chain = SubxtChain::connect(url, backend).await.expect("connects");
    let backend_arg = match backend {
        Backend::Default => "default",
        Backend::Legacy => "legacy",
    };
    let sidecar = support::TestSidecar::start();
    let dir = std::env::temp_dir().join(format!(
        "nsn-lane1-run-{}-{backend_arg}-{}",
        std::process::id(),
        url.rsplit(':').next().unwrap_or("")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("bob.key");
    support::write_key_file(&key, "//Bob\n");
    let state = dir.join("last-block");
    let _ = std::fs::remove_file(&state);

    let mut run = tokio::process::Command::new(env!("CARGO_BIN_EXE_nsn-lane1"))
        .args(["run", "--chain", url, "--chain-backend", backend_arg])
        .args(["--sidecar", &sidecar.endpoint()])
        .arg("--key-file")
        .arg(&key)
        .arg("--state-file")
        .arg(&state)
        .env("NSN_LANE1_LOG", "warn")
        .env("NSN_LANE1_TELEMETRY_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");

    // The requester posts n tasks at once and has them assigned (to Bob,
    // the runtime's only executor).
    let start = chain.finalized_head().await.unwrap().number;
    let inputs = (0..n).map(|i| format!("task {i}").into_bytes()).collect();
    let ids = post_and_assign(&chain, sidecar.sidecar.store(), "sha256", inputs).await;

    // The node (a separate process) runs and submits every one.
    wait_for_events(&chain, start, &ids, 120, |e| match e {
        MarketEvent::TaskSubmitted { task_id, .. } => Some(*task_id),
        _ => None,
    })
    .await;

    // The validators attest; every task ends verified.
    let mut attests = Vec::new();
    for v in [dev::dave(), dev::eve()] {
        let s = chain.submitter(v);
        for id in &ids {
            attests.push(s.clone().submit(MarketCall::SubmitAttestation {
                task_id: *id,
                score: 90,
                attestation_cid: None,
            }));
        }
    }
    for r in futures::future::join_all(attests).await {
        r.expect("attested");
    }
    let verified_at = wait_for_events(&chain, start, &ids, 60, |e| match e {
        MarketEvent::TaskVerified { task_id, .. } => Some(*task_id),
        _ => None,
    })
    .await;
    let head = chain.finalized_head().await.unwrap();
    for id in &ids {
        let task = chain.task(head.hash, *id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Verified, "{id}");
    }
    assert_eq!(
        run.try_wait().expect("status"),
        None,
        "the node keeps running"
    );

    // The node records the blocks it has handled, up to the verifications.
    let recorded = within_secs(30, async {
        loop {
            if let Some(n) = std::fs::read_to_string(&state)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|n| *n >= verified_at)
            {
                return n;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(recorded >= verified_at);
    run.kill().await.expect("stops");
}

async fn within_secs<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_batch_mode_many_calls_from_one_account_share_blocks_and_all_land() {
    use nsn_lane1::chain::SubmitExt;
    use nsn_lane1::chain::{ChainPort, MarketCall};
    use nsn_lane1::task::{AccountId, Lane, Priority, UNIT};

    const CALLS: u64 = 16;
    let node = support::chopsticks_in("Batch").await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let submitter = chain.submitter(subxt_signer::sr25519::dev::alice());
    let calls = (0..CALLS).map(|i| {
        submitter.clone().submit(MarketCall::CreateTaskIntent {
            lane: Lane::Lane1,
            priority: Priority::Normal,
            model_requirements: b"noop".to_vec(),
            input_cid: support::INPUT_CID.as_bytes().to_vec(),
            compute_budget: i,
            deadline_blocks: 50,
            escrow_amount: UNIT,
        })
    });
    let results = within_secs(120, futures::future::join_all(calls)).await;
    let inclusions: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every call lands"))
        .collect();
    let mut nonces: Vec<u64> = inclusions.iter().map(|i| i.nonce).collect();
    nonces.sort();
    assert_eq!(
        nonces,
        (0..CALLS).collect::<Vec<_>>(),
        "each nonce used once"
    );
    assert_eq!(chain.account_nonce(AccountId::ALICE).await.unwrap(), CALLS);
    // Calls share blocks: some block holds several. How many blocks the 16
    // take depends on chopsticks' speed: it validates concurrent
    // submissions concurrently and can pool a transaction before its
    // predecessor, which then drops it and the account's later ones until
    // they are sent again (under 8 blocks for 16 calls on a quiet machine,
    // 11 to 17 on a loaded one; BENCHMARKS.md), so the count of blocks is
    // a bench figure, not this test's.
    let mut per_block: std::collections::BTreeMap<u32, u64> = Default::default();
    for inc in &inclusions {
        *per_block.entry(inc.block.number).or_default() += 1;
    }
    let most = per_block.values().copied().max().unwrap_or(0);
    assert!(
        most >= 2,
        "{CALLS} calls in {} blocks, never two in one: {per_block:?}",
        per_block.len()
    );
    assert_eq!(submitter.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_one_chain_each_run_exactly_the_tasks_assigned_to_them() {
    use nsn_lane1::chain::MarketEvent;
    use nsn_lane1::task::AccountId;
    use std::collections::HashMap;

    const N: usize = 12;
    let node = support::chopsticks_with("Instant", "nsn-dev-spec-multi.json").await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let sidecar = support::TestSidecar::start();
    let dir = std::env::temp_dir().join(format!("nsn-lane1-three-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nodes = Vec::new();
    for who in ["Bob", "Charlie", "Ferdie"] {
        let key = dir.join(format!("{who}.key"));
        support::write_key_file(&key, &format!("//{who}\n"));
        nodes.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_nsn-lane1"))
                .args(["run", "--chain", &node.url, "--chain-backend", "legacy"])
                .args(["--sidecar", &sidecar.endpoint()])
                .arg("--key-file")
                .arg(&key)
                .env("NSN_LANE1_LOG", "warn")
                .env("NSN_LANE1_TELEMETRY_LISTEN", "127.0.0.1:0")
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("the binary starts"),
        );
    }

    let start = chain.finalized_head().await.unwrap().number;
    let inputs = (0..N).map(|i| format!("job {i}").into_bytes()).collect();
    let ids = post_and_assign(&chain, sidecar.sidecar.store(), "uppercase", inputs).await;
    let end = wait_for_events(&chain, start, &ids, 300, |e| match e {
        MarketEvent::TaskSubmitted { task_id, .. } => Some(*task_id),
        _ => None,
    })
    .await;

    // Read every event from the start: who each task went to, who ran it.
    use futures::StreamExt;
    use nsn_lane1::chain::ChainPort;
    let mut assigned: HashMap<TaskId, AccountId> = HashMap::new();
    let mut submitted: HashMap<TaskId, Vec<AccountId>> = HashMap::new();
    let mut started: HashMap<TaskId, usize> = HashMap::new();
    let mut blocks = chain.finalized_blocks(Some(start));
    while let Some(block) = blocks.next().await {
        let block = block.unwrap();
        for r in block.events.iter() {
            match &r.event {
                MarketEvent::TaskAssigned { task_id, executor } => {
                    assigned.insert(*task_id, *executor);
                }
                MarketEvent::TaskStarted { task_id, .. } => {
                    *started.entry(*task_id).or_default() += 1;
                }
                MarketEvent::TaskSubmitted {
                    task_id, executor, ..
                } => submitted.entry(*task_id).or_default().push(*executor),
                _ => {}
            }
        }
        if block.number >= end {
            break;
        }
    }
    for id in &ids {
        let by = &submitted[id];
        assert_eq!(by.len(), 1, "task {id} submitted once");
        assert_eq!(Some(&by[0]), assigned.get(id), "task {id} ran on its node");
        assert_eq!(started.get(id), Some(&1), "task {id} started once");
    }
    let executors: std::collections::HashSet<_> = assigned.values().collect();
    assert!(
        executors.len() >= 2,
        "the chain spread {N} tasks over {executors:?}"
    );
    for mut n in nodes {
        assert_eq!(n.try_wait().expect("status"), None, "every node still runs");
        n.kill().await.expect("stops");
    }
}

/// A re-org on a real node's RPC (chopsticks moves its head back and builds
/// another branch): the best-block stream goes on from the first block that
/// differs, a number it has passed, with the new branch's hashes.
#[tokio::test]
async fn the_best_block_stream_follows_a_reorg_by_hash() {
    use futures::StreamExt;
    use nsn_lane1::chain::{ChainPort, MarketCall};
    use nsn_lane1::task::{Lane, Priority, UNIT};
    use subxt::rpcs::client::rpc_params;

    let node = support::chopsticks_in("Manual").await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let new_blocks = |n: u32| {
        let chain = chain.clone();
        async move {
            let _: serde_json::Value = chain
                .rpc()
                .request(
                    "dev_newBlock",
                    rpc_params![serde_json::json!({ "count": n })],
                )
                .await
                .expect("dev_newBlock");
        }
    };
    new_blocks(2).await;
    // The head holds a transaction, so that a branch without it differs.
    let alice = subxt_signer::sr25519::dev::alice();
    let sender = chain.clone();
    let created = tokio::spawn(async move {
        sender
            .submit_signed(
                &alice,
                &MarketCall::CreateTaskIntent {
                    lane: Lane::Lane1,
                    priority: Priority::Normal,
                    model_requirements: b"sha256".to_vec(),
                    input_cid: b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
                        .to_vec(),
                    compute_budget: 1,
                    deadline_blocks: 50,
                    escrow_amount: UNIT,
                },
            )
            .await
    });
    within_secs(20, async {
        loop {
            let pending: Vec<serde_json::Value> = chain
                .rpc()
                .request("author_pendingExtrinsics", rpc_params![])
                .await
                .expect("author_pendingExtrinsics");
            if !pending.is_empty() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    new_blocks(1).await;
    let inclusion = within_secs(20, created)
        .await
        .expect("joined")
        .expect("created");
    let head = chain.best_head().await.expect("head");
    assert_eq!(inclusion, head.hash, "the head holds it");
    let mut best = chain.best_blocks(Some(head.number - 2));
    let mut old = std::collections::HashMap::new();
    for _ in 0..3 {
        let block = within_secs(20, best.next())
            .await
            .expect("stream open")
            .expect("block");
        old.insert(block.number, block.hash);
    }

    // Back to two blocks below the head, and a longer branch without the
    // transaction.
    let _: serde_json::Value = chain
        .rpc()
        .request("dev_setHead", rpc_params![head.number - 2])
        .await
        .expect("dev_setHead");
    new_blocks(3).await;

    let again = within_secs(20, best.next())
        .await
        .expect("stream open")
        .expect("block");
    assert!(
        again.number <= head.number,
        "a number already passed: a re-org ({} after {})",
        again.number,
        head.number
    );
    assert_ne!(
        Some(&again.hash),
        old.get(&again.number),
        "the new branch's block"
    );
    let mut last = again;
    while last.number < head.number + 1 {
        let next = within_secs(20, best.next())
            .await
            .expect("stream open")
            .expect("block");
        assert_eq!(next.number, last.number + 1);
        assert_eq!(next.parent_hash, last.hash, "one branch, in order");
        last = next;
    }
}

/// subxt's default backend against chopsticks: chopsticks' `chainHead_v1`
/// follow events do not decode in subxt (their runtime lacks the
/// specification's shape), subxt drops the subscription and no block can
/// be read. The connection says so at once, and names the way out.
#[tokio::test]
async fn the_default_backend_against_chopsticks_fails_at_once_with_the_way_out() {
    let node = chopsticks().await;
    let started = std::time::Instant::now();
    let err = SubxtChain::connect(&node.url, Backend::Default)
        .await
        .expect_err("chopsticks cannot serve the default backend");
    assert!(
        matches!(err, nsn_lane1::chain::ChainError::Unsupported(_)),
        "{err}"
    );
    assert!(err.to_string().contains("--chain-backend legacy"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
