//! Tasks completed per block by one executor account on the dev runtime under
//! chopsticks in batch block mode: the pipelined submitter (every call sent
//! at once, the nonce assigned in the submitter) against sequential
//! submit-and-wait-for-finality, in the same run.
//!
//! A task is completed when its executor's two calls, `start_task` and
//! `submit_result`, are final. The requester's `create_task_intent` and the
//! assignment are set up before each measurement and not counted.
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
    use nsn_lane1::chain::{MarketCall, MarketEvent, SubmitExt};
    use nsn_lane1::task::{AccountId, Lane, Priority, TaskId, UNIT};
    use subxt_signer::sr25519::dev;

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

    /// Sends `calls` through `submitter`, all at once; panics on any failure.
    async fn all_at_once(submitter: &SubxtSubmitter, calls: Vec<MarketCall>) -> Vec<MarketEvent> {
        let n = calls.len();
        futures::stream::iter(calls)
            .map(|call| submitter.clone().submit(call))
            .buffered(n.max(1))
            .map(|r| r.expect("call lands").events)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Creates `n` Lane 1 tasks as Alice and has each assigned (to Bob, the
    /// runtime's only executor); returns their ids.
    async fn setup(alice: &SubxtSubmitter, n: usize) -> Vec<TaskId> {
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
        let ids: Vec<TaskId> = all_at_once(alice, creates)
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
        let assigned = all_at_once(alice, accepts).await;
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
        bob: &SubxtSubmitter,
        ids: &[TaskId],
        pipelined: bool,
    ) -> Measured {
        let before = chain.finalized_head().await.expect("head").number;
        let start = Instant::now();
        if pipelined {
            let calls = ids.iter().flat_map(|id| executor_calls(*id)).collect();
            all_at_once(bob, calls).await;
        } else {
            for id in ids {
                for call in executor_calls(*id) {
                    bob.clone().submit(call).await.expect("call lands");
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

    pub(crate) async fn run() {
        let n: usize = std::env::var("CHAIN_BENCH_TASKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32);
        let node = crate::support::chopsticks_in("Batch").await;
        let chain = SubxtChain::connect(&node.url, Backend::Legacy)
            .await
            .expect("connects");
        let alice = chain.submitter(dev::alice());
        let bob = chain.submitter(dev::bob());

        let ids = setup(&alice, n).await;
        let sequential = measure(&chain, &bob, &ids, false).await;
        let ids = setup(&alice, n).await;
        let pipelined = measure(&chain, &bob, &ids, true).await;

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
    }
}
