//! A node builder's own stack: the crate's layers plus one of your own, wired
//! by hand to the listener and the executor loop, on the embedded dev chain
//! with the reference sidecar.
//!
//! It keeps the standard shape — the concurrency limit and preemption wrap
//! the *execute* stack (the sidecar), so the chain's waits never hold a
//! sidecar slot — and changes the rest. Compared with the standard stack
//! (`nsn_lane1::build_stack`), this one
//! - logs every task it admits (a `map_request` layer of our own),
//! - runs up to 4 models at once and starts 2 more tasks ahead,
//! - gives each execution 10 s and retries transient sidecar errors twice,
//! - logs each model run as it reaches the sidecar (another `map_request`,
//!   inside the concurrency limit: it sees only runs that hold a slot).
//!
//! Run: `cargo run --example custom_stack`

use std::time::Duration;

use nsn_lane1::chain::dev::{DevChain, DevConfig};
use nsn_lane1::chain::{MarketCall, MarketEvent, SubmitExt};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::executor::{Executor, ExecutorParts};
use nsn_lane1::layer::Lane1ServiceBuilderExt;
use nsn_lane1::layer::preempt::Preemptor;
use nsn_lane1::layer::retry::RetryPolicy;
use nsn_lane1::lifecycle::{Lifecycle, LifecycleParts, TaskBoard, TaskOutcome};
use nsn_lane1::listener::ChainListener;
use nsn_lane1::sidecar::client::ExecuteRequest;
use nsn_lane1::sidecar::client::{SidecarClient, SidecarConfig};
use nsn_lane1::sidecar::server::ReferenceSidecar;
use nsn_lane1::sidecar::store::BlobStore;
use nsn_lane1::stack::{DefaultClassifier, submit_stack};
use nsn_lane1::submitter::SentCalls;
use nsn_lane1::task::{AccountId, Lane, Priority, Task, UNIT};
use nsn_lane1::telemetry::metrics::Lane1Metrics;
use tower::ServiceBuilder;

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

    // The stack, layer by layer.
    let account = AccountId::BOB;
    let config = ExecutorConfig {
        max_concurrent: 4,
        prestart: Some(2),
        ..ExecutorConfig::default()
    };
    let metrics = Lane1Metrics::default();
    let board = TaskBoard::default();
    let preemptor = Preemptor::new();
    let canceller = client.canceller();
    let execute = ServiceBuilder::new()
        .concurrency_limit(config.max_concurrent)
        .map_request(|run: ExecuteRequest| {
            println!("running task {} on the sidecar", run.task_id);
            run
        })
        .preempt(preemptor.clone(), canceller.clone())
        .task_timeout(Duration::from_secs(10), canceller)
        .retry(RetryPolicy::new(
            2,
            Duration::from_millis(100),
            Duration::from_secs(2),
            DefaultClassifier,
        ))
        .service(client.execute());
    let admission = nsn_lane1::admission::Admission::new(config.admission.clone());
    // One record of sent calls for the account, shared by both submit stacks.
    let sent = SentCalls::default();
    let submit = submit_stack(
        &config,
        chain.submitter(account),
        chain.clone(),
        account,
        sent.clone(),
    );
    let stack = ServiceBuilder::new()
        .lane1_metrics(metrics.clone())
        .map_request(|task: Task| {
            println!("admitting task {} ({})", task.id, task.model);
            task
        })
        .service(Lifecycle::new(
            execute,
            submit.clone(),
            LifecycleParts {
                port: chain.clone(),
                account,
                board: board.clone(),
                preemptor: preemptor.clone(),
                admit: config.admitted(),
                parameters: config.model_parameters.clone(),
                admission: admission.clone(),
                attempts: Default::default(),
                foreign_cancels: metrics.foreign_cancels.with(&[]),
            },
        ));

    // The listener feeds the executor loop.
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let listener = ChainListener::new(chain.clone(), account, None, tx, metrics.clone());
    tokio::spawn(listener.run(None));
    let executor = Executor::new(
        config,
        stack,
        ExecutorParts {
            events: rx,
            submit,
            sent,
            board: board.clone(),
            preemptor,
            metrics: metrics.clone(),
            admission,
        },
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(executor.run(stop.clone().cancelled_owned()));

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
        match board.wait_done(id).await {
            TaskOutcome::Submitted { output_cid, .. } => {
                let bytes = store.get(&output_cid)?.ok_or("output missing")?;
                println!("task {id}: {}", String::from_utf8_lossy(&bytes));
            }
            other => println!("task {id}: {other:?}"),
        }
    }
    stop.cancel();
    let report = running.await??;
    println!("{report:?}");
    Ok(())
}
