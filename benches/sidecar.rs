//! `ExecuteTask` round trips per second over loopback against the reference
//! sidecar, with the zero-work `noop` model, at concurrency 1, 8 and 64. This
//! is the ceiling the executor pipeline is held against.
//!
//! The sidecar runs on its own runtime (one worker thread), the client on
//! another (one worker thread), so each side can use one of the two cores.
//!
//! Run: `cargo bench --bench sidecar`

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use nsn_lane1::sidecar::client::{ExecuteRequest, Parameters};
use nsn_lane1::task::{Lane, ModelId, TaskId};
use support::TestSidecar;
use tower::ServiceExt;

fn bench_execute(c: &mut Criterion) {
    let sidecar = TestSidecar::start();
    let input = sidecar
        .sidecar
        .store()
        .put(b"x".to_vec())
        .expect("store input");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    let client = runtime.block_on(async { sidecar.client() });
    let model = ModelId::new("noop").expect("model id");
    let next_id = AtomicU64::new(0);

    let mut group = c.benchmark_group("sidecar_execute");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for concurrency in [1usize, 8, 64] {
        group.bench_with_input(
            BenchmarkId::new("noop_roundtrip", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.iter_custom(|iters| {
                    let first = next_id.fetch_add(iters, Ordering::Relaxed);
                    runtime.block_on(async {
                        let start = Instant::now();
                        let mut calls = futures::stream::iter(first..first + iters)
                            .map(|id| {
                                client.execute().oneshot(ExecuteRequest {
                                    task_id: TaskId(id),
                                    lane: Lane::Lane1,
                                    model: model.clone(),
                                    input_cid: input.clone(),
                                    parameters: Parameters::none(),
                                    timeout: None,
                                    attempt: 0,
                                })
                            })
                            .buffer_unordered(concurrency);
                        while let Some(r) = calls.next().await {
                            if let Err(e) = r {
                                panic!("execute failed during the bench: {e}");
                            }
                        }
                        start.elapsed()
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_execute);
criterion_main!(benches);
