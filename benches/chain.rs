//! Tasks completed per block by one executor account: the pipelined
//! submitter (every call sent at once, the nonce assigned in the submitter)
//! against sequential submit-and-wait-for-finality, in the same run.
//!
//! A task is completed when its executor's two calls, `start_task` and
//! `submit_result`, are final. The requester's `create_task_intent` and the
//! assignment are set up before each measurement and not counted.
//!
//! The chain, so that what is measured is the submitter and not a test
//! chain's order of validation:
//! - with `NSN_OMNI_NODE` naming `polkadot-omni-node`, the parachain
//!   flavour of the dev runtime under it (a block every
//!   `CHAIN_BENCH_BLOCK_MS`, default 500 ms, each final at once; a real
//!   transaction pool, which keeps a transaction until its predecessor
//!   arrives), through subxt's default backend;
//! - otherwise the dev runtime under chopsticks in manual block mode, each
//!   block built by hand (`dev_newBlock`) once every call sent is in the
//!   pool, through the legacy backend. The calls go to the pool one after
//!   another (each accepted before the next is sent), so that its list is
//!   in nonce order as a node's pool would keep it.
//!
//! Then, as what a node back from an absence does, every block from #1 to
//! the head is read again through each backend the chain serves (the
//! default backend on the real node only): blocks read per second.
//!
//! Needs the `real-chain` feature and chopsticks (`npm ci` in
//! `tests/chain`): `cargo bench --bench chain`.
//! `CHAIN_BENCH_TASKS` sets the tasks per measurement (default 32).

#[cfg(feature = "real-chain")]
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(not(feature = "real-chain"))]
fn main() {
    eprintln!("the chain bench needs the `real-chain` feature (on by default)");
}

#[cfg(feature = "real-chain")]
fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench::run());
}

#[cfg(feature = "real-chain")]
mod bench {
    use std::time::{Duration, Instant};

    use futures::StreamExt;
    use nsn_lane1::chain::subxt::{Backend, SubxtChain, SubxtSubmitter};
    use nsn_lane1::chain::{Inclusion, MarketCall, MarketEvent, SubmitExt};
    use nsn_lane1::task::{AccountId, Lane, Priority, TaskId, UNIT};
    use subxt_signer::sr25519::dev;
    use tower::ServiceExt;

    const CID: &[u8] = b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

    struct Measured {
        tasks: usize,
        blocks: u32,
        wall: Duration,
    }

    impl Measured {
        fn per_block(&self) -> f64 {
            self.tasks as f64 / f64::from(self.blocks.max(1))
        }
    }

    /// Who makes the blocks.
    enum Blocks {
        /// The node, on its own clock.
        Timed,
        /// The bench: `dev_newBlock` once what was sent is in the pool.
        ByHand,
    }

    /// Builds one block by hand.
    async fn new_block(chain: &SubxtChain) {
        use subxt::rpcs::client::rpc_params;
        let _: serde_json::Value = chain
            .rpc()
            .request(
                "dev_newBlock",
                rpc_params![serde_json::json!({ "count": 1 })],
            )
            .await
            .expect("dev_newBlock");
    }

    /// Sends `calls` through `submitter`, all at once, and waits until each
    /// is final; panics on any failure. By hand, a block is built once every
    /// call is in the pool, and again until all have landed.
    async fn all_at_once(
        chain: &SubxtChain,
        blocks: &Blocks,
        submitter: &SubxtSubmitter,
        calls: Vec<MarketCall>,
    ) -> Vec<MarketEvent> {
        let n = calls.len();
        let inclusions: Vec<Inclusion> = match blocks {
            Blocks::Timed => {
                futures::stream::iter(calls)
                    .map(|call| submitter.clone().submit(call))
                    .buffered(n.max(1))
                    .map(|r| r.expect("call lands"))
                    .collect()
                    .await
            }
            Blocks::ByHand => {
                // Each call is in the pool before the next is sent, so the
                // pool's list is in nonce order (chopsticks validates
                // concurrent submissions in an order of its own and drops a
                // transaction applied before its predecessor; a node's pool
                // orders them by nonce).
                let mut pooled = Vec::with_capacity(n);
                for call in calls {
                    pooled.push(submitter.clone().oneshot(call).await.expect("pooled"));
                }
                let landed = futures::future::join_all(
                    pooled
                        .into_iter()
                        .map(|p| async move { p.await.expect("call lands") }),
                );
                tokio::pin!(landed);
                loop {
                    new_block(chain).await;
                    if let Ok(all) =
                        tokio::time::timeout(Duration::from_millis(500), &mut landed).await
                    {
                        break all;
                    }
                }
            }
        };
        inclusions.into_iter().flat_map(|i| i.events).collect()
    }

    /// Creates `n` Lane 1 tasks as Alice and has each assigned (to Bob, the
    /// runtime's only executor); returns their ids.
    async fn setup(
        chain: &SubxtChain,
        blocks: &Blocks,
        alice: &SubxtSubmitter,
        n: usize,
    ) -> Vec<TaskId> {
        let creates = (0..n)
            .map(|_| MarketCall::CreateTaskIntent {
                lane: Lane::Lane1,
                priority: Priority::Normal,
                model_requirements: b"sha256".to_vec(),
                input_cid: CID.to_vec(),
                compute_budget: 1,
                deadline_blocks: 10_000,
                escrow_amount: UNIT,
            })
            .collect();
        let ids: Vec<TaskId> = all_at_once(chain, blocks, alice, creates)
            .await
            .iter()
            .filter_map(|e| match e {
                MarketEvent::TaskCreated { task_id, .. } => Some(*task_id),
                _ => None,
            })
            .collect();
        assert_eq!(ids.len(), n, "every task created");
        let accepts = ids
            .iter()
            .map(|id| MarketCall::AcceptAssignment { task_id: *id })
            .collect();
        let assigned = all_at_once(chain, blocks, alice, accepts).await;
        for e in &assigned {
            if let MarketEvent::TaskAssigned { executor, .. } = e {
                assert_eq!(*executor, AccountId::BOB, "Bob is the only executor");
            }
        }
        ids
    }

    fn executor_calls(id: TaskId) -> [MarketCall; 2] {
        [
            MarketCall::StartTask { task_id: id },
            MarketCall::SubmitResult {
                task_id: id,
                output_cid: CID.to_vec(),
                attestation_cid: None,
            },
        ]
    }

    async fn measure(
        chain: &SubxtChain,
        blocks: &Blocks,
        bob: &SubxtSubmitter,
        ids: &[TaskId],
        pipelined: bool,
    ) -> Measured {
        let before = chain.finalized_head().await.expect("head").number;
        let start = Instant::now();
        if pipelined {
            let calls = ids.iter().flat_map(|id| executor_calls(*id)).collect();
            all_at_once(chain, blocks, bob, calls).await;
        } else {
            for id in ids {
                for call in executor_calls(*id) {
                    all_at_once(chain, blocks, bob, vec![call]).await;
                }
            }
        }
        let wall = start.elapsed();
        let after = chain.finalized_head().await.expect("head").number;
        Measured {
            tasks: ids.len(),
            blocks: after - before,
            wall,
        }
    }

    /// Reads every finalized block from #1 to the head through `backend`,
    /// as a node backfilling after an absence does; the blocks read and how
    /// long it took.
    async fn backfill(url: &str, backend: Backend) -> (u32, Duration) {
        use nsn_lane1::chain::ChainPort;
        let chain = SubxtChain::connect(url, backend).await.expect("connects");
        let head = chain.finalized_head().await.expect("head").number;
        let start = Instant::now();
        let mut blocks = ChainPort::finalized_blocks(&chain, Some(1));
        let mut read = 0;
        while let Some(block) = blocks.next().await {
            read += 1;
            if block.expect("block").number >= head {
                break;
            }
        }
        (read, start.elapsed())
    }

    pub(crate) async fn run() {
        let n: usize = std::env::var("CHAIN_BENCH_TASKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32);
        let block_ms: u64 = std::env::var("CHAIN_BENCH_BLOCK_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        let spec = "nsn-dev-para-spec.json";
        // Either node is kept alive until the end of the run.
        let (omni, chopsticks);
        let (url, backend, blocks, label) =
            match crate::support::omni_node("the chain bench on a real node", spec, block_ms).await
            {
                Some(node) => {
                    omni = node;
                    let label =
                        format!("polkadot-omni-node, {block_ms} ms blocks, default backend");
                    (omni.url.clone(), Backend::Default, Blocks::Timed, label)
                }
                None => {
                    chopsticks = crate::support::chopsticks_in("Manual").await;
                    let label = "chopsticks, blocks built by hand, legacy backend".to_owned();
                    (
                        chopsticks.url.clone(),
                        Backend::Legacy,
                        Blocks::ByHand,
                        label,
                    )
                }
            };
        println!("chain: {label}, {n} tasks per measurement");
        let chain = SubxtChain::connect(&url, backend).await.expect("connects");
        let alice = chain.submitter(dev::alice());
        let bob = chain.submitter(dev::bob());

        let ids = setup(&chain, &blocks, &alice, n).await;
        let sequential = measure(&chain, &blocks, &bob, &ids, false).await;
        let ids = setup(&chain, &blocks, &alice, n).await;
        let pipelined = measure(&chain, &blocks, &bob, &ids, true).await;

        for (name, m) in [("sequential", &sequential), ("pipelined", &pipelined)] {
            println!(
                "chain/{name:<10} tasks: {:>4}  blocks: {:>4}  tasks/block: {:>7.2}  wall: {:>8.2?}  tasks/s: {:>7.2}",
                m.tasks,
                m.blocks,
                m.per_block(),
                m.wall,
                m.tasks as f64 / m.wall.as_secs_f64()
            );
        }
        println!(
            "chain/ratio  tasks/block pipelined ÷ sequential: {:.1}×  (target ≥ 10×)",
            pipelined.per_block() / sequential.per_block()
        );
        let backends: &[Backend] = match blocks {
            Blocks::Timed => &[Backend::Default, Backend::Legacy],
            Blocks::ByHand => &[Backend::Legacy],
        };
        for backend in backends {
            let (read, wall) = backfill(&url, *backend).await;
            println!(
                "chain/backfill {:<8} blocks: {read:>5}  wall: {wall:>8.2?}  blocks/s: {:>7.1}",
                format!("{backend:?}").to_lowercase(),
                f64::from(read) / wall.as_secs_f64()
            );
        }
    }
}
