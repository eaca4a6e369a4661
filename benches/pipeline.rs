//! End-to-end pipeline throughput, and the stack's own cost.
//!
//! `pipeline/*`: tasks per second from posting (create + assign, by a
//! requester) to result on chain, through the dev chain (instant blocks),
//! the listener, the standard stack and the reference sidecar over loopback
//! with the zero-work `noop` model — for this crate's executor at concurrency
//! 1, 8 and 64, for the original plan's design (one task at a time, taken by a
//! 100 ms poll loop), and the raw sidecar ceiling (`ExecuteTask` alone at
//! concurrency 64), all in one run.
//!
//! `overhead/*`: one call through the task stack's layers (metrics,
//! concurrency limit, in-flight gauge, preempt) and the execute stack's
//! (timeout, retry) around a no-op service, against the bare no-op service,
//! and — the yardstick, in the same run — one `ExecuteTask` round trip to
//! the reference sidecar over loopback (`noop` model, one at a time).
//!
//! Run: `cargo bench --bench pipeline` (`-- overhead` for the second part)

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use nsn_lane1::board::TaskOutcome;
use nsn_lane1::chain::dev::{DevChain, DevSubmitter};
use nsn_lane1::chain::{MarketCall, SubmitExt, created_task_id};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::layer::preempt::Preemptor;
use nsn_lane1::layer::retry::RetryPolicy;
use nsn_lane1::layer::{Canceller, Lane1ServiceBuilderExt};
use nsn_lane1::listener::{ChainListener, TaskEvent};
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::{ExecuteRequest, Parameters};
use nsn_lane1::stack::{DefaultClassifier, submit_stack};
use nsn_lane1::submitter::MarketCalls;
use nsn_lane1::task::{AccountId, Cid, Lane, ModelId, Priority, Task, TaskId, UNIT};
use nsn_lane1::telemetry::metrics::Lane1Metrics;
use support::{Loopback, TestSidecar, chain_with};
use tower::{Service, ServiceBuilder, ServiceExt};

/// The development chain without validators attesting (results are
/// rejected by the verification-deadline hook instead, which keeps the
/// pending-verification list short without adding transactions). That
/// rejection slashes the executor (the deployed pallet's rule), so Bob
/// stakes nearly all he has: enough for every task a run posts.
fn bench_chain() -> DevChain {
    chain_with(|c| {
        c.max_pool = 1 << 16;
        c.auto_attest = None;
        c.genesis.executors = vec![(
            AccountId::BOB,
            999_000 * UNIT,
            vec![Lane::Lane0, Lane::Lane1],
        )];
    })
}

/// Most tasks posted and not yet through, so the chain's bounds (1000
/// assigned Lane 1 tasks) are never hit: the requester waits, as a real
/// one would.
const OUTSTANDING: u64 = 512;

/// Posts in chunks of this many.
const CHUNK: u64 = 128;

/// Posts `n` noop tasks (create + assign), 64 at a time.
async fn post(requester: &DevSubmitter, input: &Cid, n: u64) {
    futures::stream::iter(0..n)
        .map(|_| {
            let r = requester.clone();
            let input = input.as_bytes().to_vec();
            async move {
                let inc = r
                    .clone()
                    .submit(MarketCall::CreateTaskIntent {
                        lane: Lane::Lane1,
                        priority: Priority::Normal,
                        model_requirements: b"noop".to_vec(),
                        input_cid: input,
                        compute_budget: 0,
                        deadline_blocks: u32::MAX / 2,
                        escrow_amount: UNIT,
                    })
                    .await
                    .expect("create");
                let id = created_task_id(&inc.events).expect("TaskCreated");
                r.submit(MarketCall::AcceptAssignment { task_id: id })
                    .await
                    .expect("assign");
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
}

/// This crate's node, set up once per concurrency level.
struct Ours {
    chain: DevChain,
    _sidecar: TestSidecar,
    node: Node,
    input: Cid,
}

fn ours(rt: &tokio::runtime::Runtime, concurrency: usize) -> Ours {
    let chain = bench_chain();
    let sidecar = TestSidecar::start();
    let input = sidecar.sidecar.store().put(b"x".to_vec()).expect("input");
    let node = rt.block_on(async {
        Node::spawn(
            ExecutorConfig {
                max_concurrent: concurrency,
                queue_capacity: 1 << 22,
                ..ExecutorConfig::default()
            },
            NodeParts::dev(&chain, AccountId::BOB, sidecar.client()),
        )
    });
    Ours {
        chain,
        _sidecar: sidecar,
        node,
        input,
    }
}

impl Ours {
    async fn run(&self, n: u64) -> Duration {
        let submitted = self
            .node
            .metrics
            .tasks
            .with(&["submitted", "lane1", "noop"]);
        let target = submitted.get() + n;
        let base = submitted.get();
        let start = Instant::now();
        let requester = self.chain.submitter(AccountId::ALICE);
        let mut posted = 0;
        while posted < n {
            self.node
                .board
                .wait_until(|_| base + posted - submitted.get() <= OUTSTANDING - CHUNK)
                .await;
            let chunk = CHUNK.min(n - posted);
            post(&requester, &self.input, chunk).await;
            posted += chunk;
        }
        self.node
            .board
            .wait_until(|_| submitted.get() >= target)
            .await;
        start.elapsed()
    }
}

/// The original plan's design: one task at a time, taken from a queue by a
/// loop that wakes every 100 ms.
struct OriginalPlan {
    chain: DevChain,
    _sidecar: TestSidecar,
    input: Cid,
    done: std::sync::Arc<AtomicU64>,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

fn original_plan(rt: &tokio::runtime::Runtime) -> OriginalPlan {
    let chain = bench_chain();
    let sidecar = TestSidecar::start();
    let input = sidecar.sidecar.store().put(b"x".to_vec()).expect("input");
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let notify = std::sync::Arc::new(tokio::sync::Notify::new());
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 16);
        let listener = ChainListener::new(chain.clone(), AccountId::BOB, None, tx, Lane1Metrics::default());
        tokio::spawn(listener.run(None));
        let submitter = MarketCalls::new(submit_stack(
            &ExecutorConfig::default(),
            chain.submitter(AccountId::BOB),
            chain.clone(),
            AccountId::BOB,
            Default::default(),
        ));
        let client = sidecar.client();
        let (done, notify) = (done.clone(), notify.clone());
        tokio::spawn(async move {
            let mut queue: VecDeque<Task> = VecDeque::new();
            loop {
                tokio::select! {
                    Some(event) = rx.recv() => {
                        if let TaskEvent::AssignedToMe { task } = event {
                            queue.push_back(task);
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if let Some(task) = queue.pop_front() {
                            let _ = submitter.start_task(task.id).await;
                            let request = ExecuteRequest::for_task(&task, Some(Duration::from_secs(300)));
                            if let Ok(out) = client.execute().oneshot(request).await {
                                let _ = submitter.submit_result(task.id, &out.output_cid, None).await;
                            }
                            done.fetch_add(1, Ordering::SeqCst);
                            notify.notify_waiters();
                        }
                    }
                }
            }
        });
    });
    OriginalPlan {
        chain,
        _sidecar: sidecar,
        input,
        done,
        notify,
    }
}

impl OriginalPlan {
    async fn run(&self, n: u64) -> Duration {
        let target = self.done.load(Ordering::SeqCst) + n;
        let start = Instant::now();
        let requester = self.chain.submitter(AccountId::ALICE);
        post(&requester, &self.input, n).await;
        while self.done.load(Ordering::SeqCst) < target {
            let notified = self.notify.notified();
            if self.done.load(Ordering::SeqCst) >= target {
                break;
            }
            notified.await;
        }
        start.elapsed()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("bench runtime")
}

fn bench_pipeline(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    for concurrency in [1usize, 8, 64] {
        let o = ours(&rt, concurrency);
        group.bench_with_input(BenchmarkId::new("executor", concurrency), &o, |b, o| {
            b.iter_custom(|iters| rt.block_on(o.run(iters)))
        });
        rt.block_on(async { o.node.stop().await.expect("node stops") });
    }

    // The ceiling: ExecuteTask alone, 64 in flight.
    let sidecar = TestSidecar::start();
    let input = sidecar.sidecar.store().put(b"x".to_vec()).expect("input");
    let client = rt.block_on(async { sidecar.client() });
    let next = AtomicU64::new(1 << 40);
    group.bench_function("sidecar_ceiling/64", |b| {
        b.iter_custom(|iters| {
            let first = next.fetch_add(iters, Ordering::Relaxed);
            rt.block_on(async {
                let start = Instant::now();
                futures::stream::iter(first..first + iters)
                    .map(|id| {
                        client.execute().oneshot(ExecuteRequest {
                            task_id: TaskId(id),
                            lane: Lane::Lane1,
                            model: ModelId::new("noop").expect("model"),
                            input_cid: input.clone(),
                            parameters: Parameters::none(),
                            timeout: None,
                            attempt: 0,
                        })
                    })
                    .buffer_unordered(64)
                    .for_each(|r| async move {
                        r.expect("execute");
                    })
                    .await;
                start.elapsed()
            })
        })
    });

    let plan = original_plan(&rt);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("original_plan/1", |b| {
        b.iter_custom(|iters| rt.block_on(plan.run(iters)))
    });
    group.finish();
}

fn noop_task() -> Task {
    Task {
        id: TaskId(1),
        lane: Lane::Lane1,
        priority: Priority::Normal,
        model: ModelId::new("noop").expect("model"),
        input_cid: Cid::parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
            .expect("cid"),
        deadline: 1,
        compute_budget: 0,
        escrow: 0,
        requester: AccountId::ALICE,
    }
}

fn bench_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("overhead");
    let task = noop_task();
    let request = ExecuteRequest::for_task(&task, None);

    // The same two calls (a task, then its execute request) to bare no-ops.
    let mut bare = tower::service_fn(|task: Task| async move {
        Ok::<_, tower::BoxError>(TaskOutcome::NotOurs { task_id: task.id })
    });
    let mut bare_execute =
        tower::service_fn(|_: ExecuteRequest| async { Ok::<(), tower::BoxError>(()) });
    group.bench_function("bare_noop", |b| {
        b.iter(|| {
            rt.block_on(async {
                let svc = bare.ready().await.expect("ready");
                svc.call(std::hint::black_box(task.clone())).await?;
                let exec = bare_execute.ready().await.expect("ready");
                exec.call(std::hint::black_box(request.clone())).await
            })
        })
    });

    let metrics = Lane1Metrics::default();
    // The execute stack's layers around a no-op, inside the task stack's
    // layers: every layer of the standard stack, no I/O.
    let mut execute = ServiceBuilder::new()
        .task_timeout(Duration::from_secs(300), Canceller::none())
        .retry(RetryPolicy::new(
            0,
            Duration::ZERO,
            Duration::ZERO,
            DefaultClassifier,
        ))
        .service(tower::service_fn(|_: ExecuteRequest| async {
            Ok::<(), tower::BoxError>(())
        }));
    let mut stack = ServiceBuilder::new()
        .lane1_metrics(metrics.clone(), DefaultClassifier)
        .concurrency_limit(64)
        .in_flight(metrics.in_flight.with(&[]))
        .preempt(Preemptor::new(), Canceller::none())
        .service(tower::service_fn(|task: Task| async move {
            Ok::<_, tower::BoxError>(TaskOutcome::NotOurs { task_id: task.id })
        }));
    group.bench_function("all_layers_noop", |b| {
        b.iter(|| {
            rt.block_on(async {
                let svc = stack.ready().await.expect("ready");
                svc.call(std::hint::black_box(task.clone())).await?;
                let exec = execute.ready().await.expect("ready");
                exec.call(std::hint::black_box(request.clone())).await
            })
        })
    });

    // The yardstick: one ExecuteTask round trip over loopback, one at a time
    // (the sidecar serves on a runtime of its own; the client's is like the
    // node's).
    let loopback = Loopback::start();
    let next = AtomicU64::new(1 << 41);
    group.bench_function("loopback_roundtrip", |b| {
        b.iter_custom(|iters| {
            let first = next.fetch_add(iters, Ordering::Relaxed);
            loopback.round_trips(first, iters, 1)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_overhead, bench_pipeline);
criterion_main!(benches);
