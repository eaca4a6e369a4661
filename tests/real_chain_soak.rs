//! The real-process soak: chopsticks with the dev runtime, `nsn-lane1 run`
//! and `nsn-lane1 sidecar` as processes of their own, the node killed twice
//! and the sidecar once; and, when `NSN_OMNI_NODE` names one, the same on
//! the parachain flavour under polkadot-omni-node through subxt's default
//! backend. A file of its own, so that it does not share the machine with
//! the other chopsticks tests (test binaries run one after another; its two
//! soaks take turns). Runs with the `real-chain` feature (on by default).
#![cfg(all(feature = "real-chain", feature = "dev"))]

mod support;

use std::time::Duration;

use nsn_lane1::chain::subxt::{Backend, SubxtChain};
use nsn_lane1::task::TaskId;

async fn within_secs<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("in time")
}

/// The sidecar as a process of its own (`nsn-lane1 sidecar`), keeping its
/// blobs in `store` so that a restart finds them.
async fn sidecar_process(
    addr: std::net::SocketAddr,
    store: &std::path::Path,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_nsn-lane1"))
        .args(["sidecar", "--listen", &addr.to_string()])
        .arg("--store-dir")
        .arg(store)
        .env("NSN_LANE1_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the sidecar starts");
    within_secs(30, async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    child
}

/// Kills a process with SIGKILL and checks that the signal ended it.
async fn kill_9(child: &mut tokio::process::Child, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    child.start_kill().expect("signal sent");
    let status = child.wait().await.expect("reaped");
    assert_eq!(status.signal(), Some(9), "{what} was killed by SIGKILL");
}

/// The task market's calls in the blocks from `from` to the finalized head,
/// with their signers, decoded from the blocks' extrinsics.
async fn market_extrinsics(
    chain: &SubxtChain,
    from: u32,
) -> Vec<(nsn_lane1::task::AccountId, nsn_lane1::chain::MarketCall)> {
    use futures::StreamExt;
    use nsn_lane1::chain::{ChainPort, MarketCall, PALLET_INDEX};
    use parity_scale_codec::Decode;
    let head = chain.finalized_head().await.unwrap().number;
    let mut blocks = chain.finalized_blocks(Some(from));
    let mut calls = Vec::new();
    for _ in from..=head {
        let block = blocks.next().await.expect("a block").expect("readable");
        let at = chain
            .client()
            .at_block(subxt::utils::H256(block.hash.0))
            .await
            .expect("block");
        let extrinsics = at.extrinsics().fetch().await.expect("body");
        for x in extrinsics.iter() {
            let x = x.expect("decodes");
            let data = x.call_data_bytes();
            let Some(address) = x.address_bytes() else {
                continue;
            };
            if data.first() != Some(&PALLET_INDEX) {
                continue;
            }
            // MultiAddress::Id: a 0 byte, then the account.
            let who: [u8; 32] = address[1..33].try_into().expect("an account id");
            let call = MarketCall::decode(&mut &data[1..]).expect("a market call");
            calls.push((nsn_lane1::task::AccountId(who), call));
        }
    }
    calls
}

/// The real-process soak: chopsticks with the dev runtime, `nsn-lane1 run`
/// and `nsn-lane1 sidecar` as processes of their own, 40 tasks; the node is
/// killed with SIGKILL twice and restarted from its state file, the sidecar
/// once. Every task ends verified, no call is in a block twice, no slash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_and_sidecar_processes_lose_no_task_and_send_no_call_twice() {
    // Blocks on a clock (chopsticks builds one on each `dev_newBlock`), as
    // a real chain does: a node's calls wait in the pool for the next block.
    let node = support::chopsticks_in("Manual").await;
    let chain = SubxtChain::connect(&node.url, Backend::Legacy)
        .await
        .expect("connects");
    let clock = {
        let rpc = chain.rpc().clone();
        tokio::spawn(async move {
            use subxt::rpcs::client::rpc_params;
            let mut tick = tokio::time::interval(Duration::from_millis(BLOCK_MS));
            loop {
                tick.tick().await;
                let built: Result<serde_json::Value, _> = rpc
                    .request(
                        "dev_newBlock",
                        rpc_params![serde_json::json!({ "count": 1 })],
                    )
                    .await;
                built.expect("dev_newBlock");
            }
        })
    };
    soak(&node.url, Backend::Legacy, &chain).await;
    clock.abort();
}

/// The same soak on the parachain flavour under polkadot-omni-node (its own
/// block clock, each block final at once, a real transaction pool), the
/// node process and the test's client on subxt's default backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_node_killed_processes_lose_no_task_and_send_no_call_twice() {
    let test = "on_a_real_node_killed_processes_lose_no_task_and_send_no_call_twice";
    let Some(node) = support::omni_node(test, "nsn-dev-para-spec.json", BLOCK_MS).await else {
        return;
    };
    let chain = SubxtChain::connect(&node.url, Backend::Default)
        .await
        .expect("connects");
    soak(&node.url, Backend::Default, &chain).await;
}

/// 40 tasks through `nsn-lane1 run` (through `backend`) on the chain at
/// `url`, whose blocks come on their own; the faults, and the checks.
async fn soak(url: &str, backend: Backend, chain: &SubxtChain) {
    use futures::StreamExt;
    // One soak at a time: the file's two share a process.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    use nsn_lane1::chain::{ChainPort, MarketCall, MarketEvent, SubmitExt};
    use nsn_lane1::task::{AccountId, TaskStatus};
    use subxt_signer::sr25519::dev;

    const N: usize = 40;
    let backend_arg = match backend {
        Backend::Default => "default",
        Backend::Legacy => "legacy",
    };
    let dir = std::env::temp_dir().join(format!(
        "nsn-lane1-soak-{}-{backend_arg}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("store")).unwrap();
    let key = dir.join("bob.key");
    support::write_key_file(&key, "//Bob\n");
    let state = dir.join("last-block");
    // Runs long enough (300 ms) to be in flight when a process dies.
    let config = dir.join("lane1.toml");
    std::fs::write(
        &config,
        "[executor.model_parameters]\nsleep = '{\"duration_ms\": 300}'\n",
    )
    .unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut sidecar = sidecar_process(addr, &dir.join("store")).await;
    let store = nsn_lane1::sidecar::store::BlobStore::with_dir(dir.join("store")).unwrap();
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_nsn-lane1"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--chain", url, "--chain-backend", backend_arg])
            .args(["--sidecar", &format!("http://{addr}")])
            .arg("--key-file")
            .arg(&key)
            .arg("--state-file")
            .arg(&state)
            .env("NSN_LANE1_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the node starts")
    };
    let mut node_process = run();

    let stake_before = executor_stake(chain, AccountId::BOB).await;
    let start = chain.finalized_head().await.unwrap().number;
    // The requester posts the tasks one after another (each created, then
    // assigned) while the node works and the faults come.
    let (id_tx, mut id_rx) = tokio::sync::mpsc::unbounded_channel();
    let poster = tokio::spawn(post_one_by_one(chain.clone(), store.clone(), N, id_tx));
    let mut ids = std::collections::HashSet::new();

    // The validators attest each result as it lands; the faults come at
    // set points of the run, while tasks are still to do.
    let mut blocks = chain.finalized_blocks(Some(start));
    let (dave, eve) = (chain.submitter(dev::dave()), chain.submitter(dev::eve()));
    let mut submitted = std::collections::HashSet::new();
    let mut verified = std::collections::HashSet::new();
    let mut attesting = futures::stream::FuturesUnordered::<
        futures::future::BoxFuture<'static, Result<_, nsn_lane1::chain::SubmitError>>,
    >::new();
    let (dave_turn, eve_turn) = (
        std::sync::Arc::new(tokio::sync::Mutex::new(())),
        std::sync::Arc::new(tokio::sync::Mutex::new(())),
    );
    let mut faults = Vec::new();
    within_secs(600, async {
        while verified.len() < N {
            tokio::select! {
                Some(id) = id_rx.recv() => {
                    ids.insert(id);
                }
                Some(result) = attesting.next(), if !attesting.is_empty() => {
                    result.expect("attested");
                }
                block = blocks.next() => {
                    let block = block.expect("the chain runs").expect("readable");
                    for r in block.events.iter() {
                        match r.event {
                            MarketEvent::TaskSubmitted { task_id, .. }
                                if ids.contains(&task_id) && submitted.insert(task_id) =>
                            {
                                for (v, turn) in [(&dave, &dave_turn), (&eve, &eve_turn)] {
                                    let (v, turn) = (v.clone(), turn.clone());
                                    attesting.push(Box::pin(async move {
                                        // One call of a validator at a time:
                                        // chopsticks drops a transaction it
                                        // takes before its predecessor.
                                        let _turn = turn.lock().await;
                                        v.submit(MarketCall::SubmitAttestation {
                                            task_id,
                                            score: 90,
                                            attestation_cid: None,
                                        })
                                        .await
                                    }));
                                }
                            }
                            MarketEvent::TaskVerified { task_id, .. } if ids.contains(&task_id) => {
                                verified.insert(task_id);
                            }
                            _ => {}
                        }
                    }
                    let done = submitted.len();
                    eprintln!("block {}: {done} submitted, {} verified", block.number, verified.len());
                    if done >= 5 && faults.is_empty() {
                        kill_9(&mut node_process, "the node").await;
                        faults.push(("node", done));
                        node_process = run();
                    } else if done >= 15 && faults.len() == 1 {
                        kill_9(&mut sidecar, "the sidecar").await;
                        faults.push(("sidecar", done));
                        sidecar = sidecar_process(addr, &dir.join("store")).await;
                    } else if done >= 25 && faults.len() == 2 {
                        kill_9(&mut node_process, "the node").await;
                        faults.push(("node", done));
                        node_process = run();
                    }
                }
            }
        }
    })
    .await;
    poster.await.expect("every task posted");
    assert_eq!(ids.len(), N);
    assert_eq!(
        faults.len(),
        3,
        "two node kills and a sidecar kill: {faults:?}"
    );
    assert!(
        faults.iter().all(|(_, done)| *done < N),
        "each while tasks were left"
    );

    // Counted from the blocks: each call once per task, no fail_task; the
    // executor's stake untouched.
    let calls = market_extrinsics(chain, start).await;
    for id in &ids {
        for name in ["start_task", "submit_result", "fail_task"] {
            let sent = calls
                .iter()
                .filter(|(who, c)| {
                    *who == AccountId::BOB && c.name() == name && c.task_id() == Some(*id)
                })
                .count();
            let want = usize::from(name != "fail_task");
            assert_eq!(sent, want, "task {id}: {name} in blocks {sent} times");
        }
    }
    let head = chain.finalized_head().await.unwrap();
    for id in &ids {
        let task = chain.task(head.hash, *id).await.unwrap().unwrap();
        assert_eq!(task.status, TaskStatus::Verified, "{id}");
    }
    assert_eq!(
        executor_stake(chain, AccountId::BOB).await,
        stake_before,
        "no slash"
    );
    assert_eq!(
        node_process.try_wait().expect("status"),
        None,
        "the node keeps running"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Posts `n` Lane 1 `sleep` tasks as Alice, one after another (created,
/// then assigned), with their inputs in `store`; tells each id as created.
async fn post_one_by_one(
    chain: SubxtChain,
    store: nsn_lane1::sidecar::store::BlobStore,
    n: usize,
    ids: tokio::sync::mpsc::UnboundedSender<TaskId>,
) {
    use nsn_lane1::chain::{MarketCall, SubmitExt};
    let alice = chain.submitter(subxt_signer::sr25519::dev::alice());
    for i in 0..n {
        let cid = store.put(format!("soak {i}").into_bytes()).unwrap();
        let created = alice
            .clone()
            .submit(support::lane1_task("sleep", &cid))
            .await
            .expect("created");
        let id = support::created_id(&created);
        let _ = ids.send(id);
        alice
            .clone()
            .submit(MarketCall::AcceptAssignment { task_id: id })
            .await
            .expect("assigned");
    }
}

/// The block time of the real-process soak's chain.
const BLOCK_MS: u64 = 250;

/// An executor's stake in the dev runtime's registry (account, stake, lanes).
async fn executor_stake(chain: &SubxtChain, who: nsn_lane1::task::AccountId) -> u128 {
    use parity_scale_codec::Decode;
    let at = chain.client().at_current_block().await.expect("head");
    let addr = subxt::dynamic::storage::<(), subxt::dynamic::Value>("NsnTaskMarket", "Executors");
    let value = at.storage().fetch(addr, ()).await.expect("Executors");
    let executors =
        <Vec<([u8; 32], u128, Vec<u8>)>>::decode(&mut value.bytes()).expect("Executors");
    executors
        .into_iter()
        .find(|(a, _, _)| *a == who.0)
        .map_or(0, |(_, stake, _)| stake)
}
