//! Scheduler throughput and memory.
//!
//! Workload: enqueue `n` tasks with pseudo-random priority, deadline and id
//! order, then drain them all with `next_task`. Measured for the crate's
//! [`Scheduler`] and for a baseline written here: one sorted `VecDeque` per
//! lane with a linear position scan and an insert (the design the scheduler
//! replaces). Before the timings, the bench prints the heap the scheduler holds
//! per queued task, counted by an instrumenting global allocator.
//!
//! Run: `cargo bench --bench scheduler`

use std::alloc::System;
use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use nsn_lane1::scheduler::{Schedulable, Scheduler, TaskKey};
use nsn_lane1::task::{AccountId, Cid, Lane, ModelId, Priority, Task, TaskId};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A small deterministic generator (xorshift64*), so both designs see the same keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn keys(n: usize) -> Vec<TaskKey> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ids: Vec<u64> = (0..n as u64).collect();
    // Fisher–Yates, so ids arrive out of order.
    for i in (1..ids.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        ids.swap(i, j);
    }
    ids.into_iter()
        .map(|id| {
            let r = rng.next();
            TaskKey {
                id: TaskId(id),
                // One task in eight is Lane 0.
                lane: if r.is_multiple_of(8) {
                    Lane::Lane0
                } else {
                    Lane::Lane1
                },
                priority: Priority::ALL[(r >> 8) as usize % 3],
                deadline: ((r >> 16) % 10_000) as u32,
            }
        })
        .collect()
}

/// The order key, as the chain defines it.
fn order(k: &TaskKey) -> (u8, u32, u64) {
    (2 - k.priority.weight(), k.deadline, k.id.0)
}

/// The baseline: per lane a `VecDeque` kept sorted by a linear scan for the
/// insert position.
struct SortedVecDeque<T> {
    lanes: [VecDeque<T>; 2],
}

impl<T: Schedulable> SortedVecDeque<T> {
    fn new() -> Self {
        SortedVecDeque {
            lanes: [VecDeque::new(), VecDeque::new()],
        }
    }

    fn enqueue(&mut self, item: T) {
        let k = item.key();
        let q = &mut self.lanes[k.lane.index() as usize];
        let pos = q
            .iter()
            .position(|x| order(&x.key()) > order(&k))
            .unwrap_or(q.len());
        q.insert(pos, item);
    }

    fn next(&mut self) -> Option<T> {
        self.lanes[0]
            .pop_front()
            .or_else(|| self.lanes[1].pop_front())
    }
}

fn run_scheduler<T: Schedulable + Clone>(items: Vec<T>) -> u64 {
    let mut s: Scheduler<T> = Scheduler::new(items.len());
    for item in items {
        // Every id is distinct and capacity is n: enqueue cannot fail here.
        if s.enqueue(item).is_err() {
            unreachable!("distinct ids within capacity");
        }
    }
    let mut sum = 0u64;
    while let Some(item) = s.next_task() {
        let id = item.key().id;
        sum = sum.wrapping_add(id.0);
        // The executor's cycle: a task handed out is later completed.
        if s.complete(id).is_err() {
            unreachable!("a task just handed out is running");
        }
    }
    sum
}

fn run_baseline<T: Schedulable>(items: Vec<T>) -> u64 {
    let mut s = SortedVecDeque::new();
    for item in items {
        s.enqueue(item);
    }
    let mut sum = 0u64;
    while let Some(item) = s.next() {
        sum = sum.wrapping_add(item.key().id.0);
    }
    sum
}

fn full_task(k: &TaskKey, model: &ModelId, cids: &[Cid]) -> Task {
    Task {
        id: k.id,
        lane: k.lane,
        priority: k.priority,
        model: model.clone(),
        input_cid: cids[(k.id.0 % cids.len() as u64) as usize].clone(),
        deadline: k.deadline,
        compute_budget: 1_000,
        escrow: 1_000_000_000_000,
        requester: AccountId::ALICE,
    }
}

/// Heap bytes held per queued task after enqueuing `items`.
fn heap_per_task<T: Schedulable>(mut items: Vec<T>) -> f64 {
    let n = items.len();
    let region = Region::new(GLOBAL);
    let mut s: Scheduler<T> = Scheduler::new(n);
    // `drain` keeps the input's buffer alive, so freeing it is not counted.
    for item in items.drain(..) {
        if s.enqueue(item).is_err() {
            unreachable!("distinct ids within capacity");
        }
    }
    let stats = region.change();
    // Reallocations are already folded into these two counters.
    let held = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    black_box(&s);
    held / n as f64
}

fn heap_per_task_baseline(keys: &[TaskKey]) -> f64 {
    let region = Region::new(GLOBAL);
    let mut s = SortedVecDeque::new();
    for k in keys {
        s.enqueue(*k);
    }
    let stats = region.change();
    // Reallocations are already folded into these two counters.
    let held = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    black_box(&s);
    held / keys.len() as f64
}

fn report_heap() {
    println!("heap held per queued task (instrumenting allocator):");
    println!(
        "  {:>9}  {:>22}  {:>26}  {:>20}",
        "n", "Scheduler<TaskKey> B", "Scheduler<Task> B (bodies)", "sorted VecDeque B"
    );
    let model = ModelId::new("sha256").expect("valid model id");
    let cids: Vec<Cid> = (0..16u8).map(|i| Cid::from_sha256_raw([i; 32])).collect();
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let ks = keys(n);
        let bookkeeping = heap_per_task(ks.clone());
        // Task bodies share their model and CID allocations (as tasks from the
        // listener share interned strings); the body itself is counted.
        let tasks: Vec<Task> = ks.iter().map(|k| full_task(k, &model, &cids)).collect();
        let with_bodies = heap_per_task(tasks);
        // The baseline's inserts are quadratic: past 10^5 it would take minutes.
        if n <= 100_000 {
            let baseline = heap_per_task_baseline(&ks);
            println!("  {n:>9}  {bookkeeping:>22.1}  {with_bodies:>26.1}  {baseline:>20.1}");
        } else {
            println!(
                "  {n:>9}  {bookkeeping:>22.1}  {with_bodies:>26.1}  {:>20}",
                "-"
            );
        }
    }
    println!(
        "  (size_of::<Task>() = {} B, size_of::<TaskKey>() = {} B)",
        std::mem::size_of::<Task>(),
        std::mem::size_of::<TaskKey>()
    );
}

fn bench_group<T: Schedulable + Clone>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn(&[TaskKey]) -> Vec<T>,
) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let items = make(&keys(n));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("scheduler", n), &items, |b, items| {
            b.iter_batched(
                || items.clone(),
                |items| run_scheduler(black_box(items)),
                BatchSize::LargeInput,
            )
        });
        // The baseline is quadratic: at 10^6 one pass takes minutes, so it stops at 10^5.
        if n <= 100_000 {
            group.bench_with_input(
                BenchmarkId::new("sorted_vecdeque", n),
                &items,
                |b, items| {
                    b.iter_batched(
                        || items.clone(),
                        |items| run_baseline(black_box(items)),
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    group.finish();
}

/// The executor's payload: full `Task`s (model and CID shared, as the
/// listener's interned strings are).
fn bench_tasks(c: &mut Criterion) {
    let model = ModelId::new("sha256").expect("valid model id");
    let cids: Vec<Cid> = (0..16u8).map(|i| Cid::from_sha256_raw([i; 32])).collect();
    bench_group(c, "enqueue_drain_task", |ks| {
        ks.iter().map(|k| full_task(k, &model, &cids)).collect()
    });
}

/// Keys only: the ordering work without the payload.
fn bench_keys(c: &mut Criterion) {
    bench_group(c, "enqueue_drain_key", |ks| ks.to_vec());
}

fn check_same_order() {
    // Both designs must hand out the same sequence, or the comparison is moot.
    let ks = keys(5_000);
    let mut a: Scheduler<TaskKey> = Scheduler::new(ks.len());
    let mut b = SortedVecDeque::new();
    for k in &ks {
        if a.enqueue(*k).is_err() {
            unreachable!("distinct ids within capacity");
        }
        b.enqueue(*k);
    }
    let xs: Vec<TaskKey> = std::iter::from_fn(|| a.next_task()).collect();
    let ys: Vec<TaskKey> = std::iter::from_fn(|| b.next()).collect();
    assert_eq!(xs, ys, "scheduler and baseline disagree on order");
}

criterion_group!(benches, bench_tasks, bench_keys);

fn main() {
    check_same_order();
    report_heap();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
