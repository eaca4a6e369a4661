//! How fast Lane 0 work takes the GPU back: a Lane 1 `sleep` run is in
//! progress when a Lane 0 task is created; the time from the Lane 0 task's
//! best block reaching the node to the sidecar's confirmed cancel of the
//! Lane 1 run. With hints from best blocks (the standard node) against the
//! finalized-only path (`lane0_hints` off), on the dev chain at 600 ms
//! blocks with finality two blocks behind.
//!
//! `cargo bench --bench preemption` (`PREEMPTION_ROUNDS` sets the rounds per
//! path, default 7; the median is reported).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use futures::StreamExt;
use nsn_lane1::chain::dev::{BlockMode, DevChain, DevConfig, DevGenesis};
use nsn_lane1::chain::{ChainPort, MarketCall, MarketEvent, SubmitExt, created_task_id};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::Parameters;
use nsn_lane1::sidecar::server::RunState;
use nsn_lane1::task::{AccountId, Lane, ModelId, Priority, UNIT};
use support::TestSidecar;
use tokio::time::Instant;

const BLOCK: Duration = Duration::from_millis(600);

/// The median time from Lane 0 work's best block to the confirmed cancel.
async fn measure(hints: bool, rounds: usize) -> Duration {
    let mut genesis = DevGenesis::development();
    // Each round's Lane 1 task is failed by the chain's hook (and its
    // executor slashed, the pallet's rule): stake for all of them.
    genesis.executors = vec![(
        AccountId::BOB,
        900_000 * UNIT,
        vec![Lane::Lane0, Lane::Lane1],
    )];
    let chain = DevChain::new(DevConfig {
        genesis,
        block_mode: BlockMode::Interval(BLOCK),
        auto_attest: Some(90),
        max_pool: 8192,
        finality_lag: Some(2),
    })
    .expect("dev chain");
    let sidecar = TestSidecar::start();
    let mut config = ExecutorConfig {
        lane0_hints: hints,
        ..ExecutorConfig::default()
    };
    config.model_parameters.insert(
        ModelId::new("sleep").expect("id"),
        Parameters::json(&serde_json::json!({ "duration_ms": 60_000 })),
    );
    let node = Node::spawn(
        config,
        NodeParts::dev(&chain, AccountId::BOB, sidecar.client()),
    );
    node.following().await;
    let alice = chain.submitter(AccountId::ALICE);
    let mut best = chain.best_blocks(None);
    let mut took = Vec::new();
    for round in 0..rounds {
        let cid = sidecar
            .sidecar
            .store()
            .put(format!("round {round} {hints}").into_bytes())
            .expect("input");
        let created = alice
            .clone()
            .submit(support::lane1_task_due("sleep", &cid, 10_000))
            .await
            .expect("created");
        let id = created_task_id(&created.events).expect("TaskCreated");
        alice
            .clone()
            .submit(MarketCall::AcceptAssignment { task_id: id })
            .await
            .expect("assigned");
        sidecar
            .sidecar
            .wait_for(&id.to_string(), RunState::Running)
            .await;
        // Lane 0 work: the moment its best block reaches this subscriber is
        // when it reaches the node's listener.
        let lane0 = alice.clone().submit(MarketCall::CreateTaskIntent {
            lane: Lane::Lane0,
            priority: Priority::High,
            model_requirements: b"video-render".to_vec(),
            input_cid: cid.as_bytes().to_vec(),
            compute_budget: 0,
            deadline_blocks: 1_000,
            escrow_amount: UNIT,
        });
        let (lane0, seen) = tokio::join!(lane0, async {
            loop {
                let block = best.next().await.expect("stream").expect("block");
                let now = Instant::now();
                if block.events.iter().any(|r| {
                    matches!(
                        r.event,
                        MarketEvent::TaskCreated {
                            lane: Lane::Lane0,
                            ..
                        }
                    )
                }) {
                    return now;
                }
            }
        });
        let lane0 = created_task_id(&lane0.expect("lane 0").events).expect("TaskCreated");
        sidecar
            .sidecar
            .wait_for(&id.to_string(), RunState::Cancelled)
            .await;
        let cancelled = sidecar
            .sidecar
            .run_history()
            .into_iter()
            .rev()
            .find(|r| r.task_id == id.to_string())
            .expect("the cancelled run")
            .ended;
        took.push(cancelled.saturating_duration_since(seen));
        // Settle Lane 0 for the next round.
        alice
            .clone()
            .submit(MarketCall::AcceptAssignment { task_id: lane0 })
            .await
            .expect("lane 0 assigned");
        node.board.wait_done(id).await;
    }
    let _ = node.stop().await;
    chain.shutdown();
    took.sort();
    took[took.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("PREEMPTION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "preemption: block {} ms, finality lag 2, a 60 s sleep run cancelled by Lane 0 work ({rounds} rounds, median)",
            BLOCK.as_millis()
        );
        let hinted = measure(true, rounds).await;
        println!(
            "preemption/best-block hint  lane 0's best block → sidecar's confirmed cancel: {hinted:>9.2?}  (target ≤ 10 ms)"
        );
        let finalized = measure(false, rounds).await;
        println!(
            "preemption/finalized only   lane 0's best block → sidecar's confirmed cancel: {finalized:>9.2?}"
        );
    });
}
