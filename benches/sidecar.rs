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
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use support::Loopback;

fn bench_execute(c: &mut Criterion) {
    let loopback = Loopback::start();
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
                    loopback.round_trips(first, iters, concurrency)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_execute);
criterion_main!(benches);
