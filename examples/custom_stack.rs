//! A node builder's own stack: the standard node with layers of your own,
//! through `Node::builder`, on the embedded dev chain with the reference
//! sidecar. None of the node's wiring (listener, executor, the shared record
//! of sent calls, the confirmer, metrics) is copied here.
//!
//! It adds
//! - a logging layer around the execute stack: each model run is printed,
//!   with its run id and model, as the lifecycle asks for it (tower's
//!   `MapRequest`; any `Layer` over `ExecuteRequest` fits there);
//! - tower's `LoadShed` around the submit stack: when the chain submitter
//!   is full (its transactions in flight at their bound), a call is shed at
//!   once instead of queued; the lifecycle holds the task and tries again
//!   at a later block (nothing is lost);
//! - its own executor settings: four models at once, two tasks started
//!   ahead, 10 s per run, two retries of transient sidecar errors.
//!
//! Run: `cargo run --example custom_stack`

use std::time::Duration;

use nsn_lane1::chain::dev::{DevChain, DevConfig};
use nsn_lane1::chain::{MarketCall, MarketEvent, SubmitExt};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::lifecycle::TaskOutcome;
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::{ExecuteRequest, SidecarClient, SidecarConfig};
use nsn_lane1::sidecar::server::ReferenceSidecar;
use nsn_lane1::sidecar::store::BlobStore;
use nsn_lane1::task::{AccountId, Lane, Priority, UNIT};
use tower::load_shed::LoadShedLayer;
use tower::util::MapRequestLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The chain and the sidecar.
    let chain = DevChain::new(DevConfig::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let sidecar = ReferenceSidecar::new(BlobStore::in_memory());
    let store = sidecar.store().clone();
    tokio::spawn(sidecar.serve(listener, std::future::pending()));
    let client = SidecarClient::connect_lazy(SidecarConfig::new(endpoint))?;

    // The node, with two layers of our own.
    let config = ExecutorConfig {
        max_concurrent: 4,
        prestart: Some(2),
        execution_timeout: Duration::from_secs(10),
        retry_attempts: 2,
        ..ExecutorConfig::default()
    };
    let parts = NodeParts::dev(&chain, AccountId::BOB, client);
    let node = Node::builder(config, parts)
        .execute_layer(MapRequestLayer::new(|run: ExecuteRequest| {
            println!("running {} ({}) on the sidecar", run.run(), run.model);
            run
        }))
        .submit_layer(LoadShedLayer::new())
        .spawn();
    node.following().await;

    // A requester posts ten tasks.
    let requester = chain.submitter(AccountId::ALICE);
    let mut ids = Vec::new();
    for i in 0..10u32 {
        let input = store.put(format!("hello {i}").into_bytes())?;
        let created = requester
            .clone()
            .submit(MarketCall::CreateTaskIntent {
                lane: Lane::Lane1,
                priority: Priority::Normal,
                model_requirements: b"uppercase".to_vec(),
                input_cid: input.as_bytes().to_vec(),
                compute_budget: 100,
                deadline_blocks: 100,
                escrow_amount: UNIT,
            })
            .await?;
        let Some(MarketEvent::TaskCreated { task_id, .. }) = created.events.first() else {
            return Err("no TaskCreated".into());
        };
        requester
            .clone()
            .submit(MarketCall::AcceptAssignment { task_id: *task_id })
            .await?;
        ids.push(*task_id);
    }

    for id in ids {
        match node.board.wait_done(id).await {
            TaskOutcome::Submitted { output_cid, .. } => {
                let bytes = store.get(&output_cid)?.ok_or("output missing")?;
                println!("task {id}: {}", String::from_utf8_lossy(&bytes));
            }
            other => println!("task {id}: {other:?}"),
        }
    }
    let report = node.stop().await?;
    println!("{report:?}");
    Ok(())
}
