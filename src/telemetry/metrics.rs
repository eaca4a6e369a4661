//! The node's metrics on [`prometheus_client`]: labelled counters, gauges
//! and histograms, rendered in the OpenMetrics text format for `/metrics`.
//! A thin front keeps label values positional (`with(&["submitted"])`) and
//! the exposed names as written (a counter registered as `x_total` is
//! exposed as `x_total`).
//!
//! ```
//! use nsn_lane1::telemetry::metrics::Registry;
//!
//! let registry = Registry::default();
//! let tasks = registry.counter("lane1_tasks_total", "Tasks finished, by outcome.", &["outcome"]);
//! tasks.with(&["submitted"]).inc();
//! let text = registry.render();
//! assert!(text.contains("lane1_tasks_total{outcome=\"submitted\"} 1"));
//! ```

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::metrics::histogram::Histogram as PromHistogram;

/// A series' labels: names with their values.
type Labels = Vec<(&'static str, String)>;

/// A set of metric families. Clones share one registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<prometheus_client::registry::Registry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, prometheus_client::registry::Registry> {
        // Registration is a single call; a poisoned lock is still whole.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a counter family (`name` ends in `_total`, as exposed).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
    ) -> CounterVec {
        let family = Family::<Labels, PromCounter>::default();
        // The exposition adds `_total` to a counter's name.
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.lock().register(base, help_text(help), family.clone());
        CounterVec {
            family,
            names: labels.to_vec(),
        }
    }

    /// Registers a counter family of fractional values (seconds).
    pub fn float_counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
    ) -> FloatCounterVec {
        let family = Family::<Labels, PromCounter<f64, AtomicU64>>::default();
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.lock().register(base, help_text(help), family.clone());
        FloatCounterVec {
            family,
            names: labels.to_vec(),
        }
    }

    /// Registers a gauge family.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
    ) -> GaugeVec {
        let family = Family::<Labels, PromGauge>::default();
        self.lock().register(name, help_text(help), family.clone());
        GaugeVec {
            family,
            names: labels.to_vec(),
        }
    }

    /// Registers a histogram family with these bucket bounds.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
        buckets: &[f64],
    ) -> HistogramVec {
        let family = Family::new_with_constructor(Buckets(buckets.into()));
        self.lock().register(name, help_text(help), family.clone());
        HistogramVec {
            family,
            names: labels.to_vec(),
        }
    }

    /// Every family in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock());
        out
    }
}

/// Help text without its final period (the exposition adds one).
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

/// Pairs label names with values; a wrong count is a programming error in
/// this crate, padded or cut rather than a panic in a metrics path.
fn labels(names: &[&'static str], values: &[&str]) -> Labels {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, values.get(i).copied().unwrap_or("").to_owned()))
        .collect()
}

/// Makes each new histogram of a family with the family's buckets.
#[derive(Clone, Debug)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<PromHistogram> for Buckets {
    fn new_metric(&self) -> PromHistogram {
        PromHistogram::new(self.0.iter().copied())
    }
}

/// A counter family.
#[derive(Clone, Debug)]
pub struct CounterVec {
    family: Family<Labels, PromCounter>,
    names: Vec<&'static str>,
}

impl CounterVec {
    /// The counter with these label values.
    pub fn with(&self, values: &[&str]) -> Counter {
        Counter(
            self.family
                .get_or_create(&labels(&self.names, values))
                .clone(),
        )
    }
}

/// One counter.
#[derive(Clone, Debug)]
pub struct Counter(PromCounter);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    /// Its value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A counter family of fractional values.
#[derive(Clone, Debug)]
pub struct FloatCounterVec {
    family: Family<Labels, PromCounter<f64, AtomicU64>>,
    names: Vec<&'static str>,
}

impl FloatCounterVec {
    /// Adds `v` to the counter with these label values.
    pub fn add(&self, values: &[&str], v: f64) {
        self.family
            .get_or_create(&labels(&self.names, values))
            .inc_by(v);
    }
}

/// A gauge family.
#[derive(Clone, Debug)]
pub struct GaugeVec {
    family: Family<Labels, PromGauge>,
    names: Vec<&'static str>,
}

impl GaugeVec {
    /// The gauge with these label values.
    pub fn with(&self, values: &[&str]) -> Gauge {
        Gauge(
            self.family
                .get_or_create(&labels(&self.names, values))
                .clone(),
        )
    }
}

/// One gauge.
#[derive(Clone, Debug)]
pub struct Gauge(PromGauge);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.dec();
    }

    /// Sets it.
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }

    /// Its value.
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// A histogram family.
#[derive(Clone, Debug)]
pub struct HistogramVec {
    family: Family<Labels, PromHistogram, Buckets>,
    names: Vec<&'static str>,
}

impl HistogramVec {
    /// The histogram with these label values.
    pub fn with(&self, values: &[&str]) -> Histogram {
        Histogram(
            self.family
                .get_or_create(&labels(&self.names, values))
                .clone(),
        )
    }
}

/// One histogram.
#[derive(Clone, Debug)]
pub struct Histogram(PromHistogram);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, v: f64) {
        self.0.observe(v);
    }
}

/// Seconds buckets for task durations: 5 ms to 10 min.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The executor's metrics.
#[derive(Clone, Debug)]
pub struct Lane1Metrics {
    /// The registry they live in.
    pub registry: Registry,
    /// Tasks through the stack, by outcome, lane and model.
    pub tasks: CounterVec,
    /// Task durations through the stack, by outcome, lane and model.
    pub task_seconds: HistogramVec,
    /// Tasks in flight in the stack.
    pub in_flight: GaugeVec,
    /// Tasks waiting in the scheduler, by lane.
    pub queued: GaugeVec,
    /// Chain calls, by call and outcome.
    pub chain_calls: CounterVec,
    /// Chain events seen, by name.
    pub chain_events: CounterVec,
    /// Times the listener lost the chain connection and retried.
    pub chain_reconnects: CounterVec,
    /// Finalized blocks whose events could not be read because the chain
    /// node had pruned their state (the node resumed from state after them).
    pub skipped_blocks: CounterVec,
    /// Payments received for verified tasks, in the chain's smallest unit.
    pub payments: CounterVec,
    /// Slashes of our account, by cause, as the pallet's rules apply them
    /// to the events of our tasks.
    pub slashes: CounterVec,
    /// Transactions between the pool and a block.
    pub chain_outstanding: GaugeVec,
    /// The best block seen.
    pub best_block: GaugeVec,
    /// The last finalized block the node has handled.
    pub handled_block: GaugeVec,
    /// Seconds the sidecar had at least one of our runs in progress; its
    /// rate is the sidecar's busy ratio.
    pub sidecar_busy: FloatCounterVec,
    /// Runs stopped by a cancel the node did not ask for (another party
    /// on the sidecar's port, or the sidecar itself).
    pub foreign_cancels: CounterVec,
    /// Per sidecar of the node's set (label `sidecar`, its endpoint): 1
    /// while it is in the set.
    pub sidecar_up: GaugeVec,
    /// Per sidecar: runs placed on it.
    pub sidecar_runs: CounterVec,
    /// Per sidecar: runs placed on it for a model it did not have loaded.
    pub sidecar_cold_runs: CounterVec,
    /// Per sidecar: times a run found it unreachable and it left the set.
    pub sidecar_failures: CounterVec,
    /// Per sidecar: models it has loaded.
    pub sidecar_loaded_models: GaugeVec,
    /// Per sidecar: runs on it now.
    pub sidecar_in_flight: GaugeVec,
    /// Per sidecar: seconds with at least one run of ours on it.
    pub sidecar_member_busy: FloatCounterVec,
    /// 1 while the stake breaker is open.
    pub stake_breaker_open: GaugeVec,
    /// Tasks held for faults that are not theirs, by cause.
    pub held: GaugeVec,
    /// Times a finalized block could not be decoded (the node does not go
    /// past such a block).
    pub chain_decode_errors: CounterVec,
    /// Calls whose best block was retracted and that no branch held: sent
    /// again, by call.
    pub calls_retracted: CounterVec,
    /// 1 once another process was seen signing with the node's key (the
    /// node then signs nothing more).
    pub foreign_signer: GaugeVec,
    /// The task series already looked up, by outcome, lane and model: a
    /// task's record is a read of this map, not a label set built and
    /// hashed into two families.
    task_series: Arc<std::sync::RwLock<TaskSeries>>,
}

type TaskSeries = std::collections::HashMap<
    (&'static str, crate::task::Lane, crate::task::ModelId),
    (PromCounter, PromHistogram),
>;

impl Default for Lane1Metrics {
    fn default() -> Self {
        Lane1Metrics::new(Registry::default())
    }
}

impl Lane1Metrics {
    /// Registers the executor's metrics in `registry`.
    pub fn new(registry: Registry) -> Self {
        let metrics = Lane1Metrics {
            tasks: registry.counter(
                "lane1_tasks_total",
                "Tasks that left the service stack, by outcome.",
                &["outcome", "lane", "model"],
            ),
            task_seconds: registry.histogram(
                "lane1_task_duration_seconds",
                "Time from entering the service stack to leaving it.",
                &["outcome", "lane", "model"],
                DURATION_BUCKETS,
            ),
            in_flight: registry.gauge("lane1_tasks_in_flight", "Tasks in the service stack.", &[]),
            queued: registry.gauge(
                "lane1_tasks_queued",
                "Tasks waiting in the scheduler.",
                &["lane"],
            ),
            chain_calls: registry.counter(
                "lane1_chain_calls_total",
                "Extrinsics submitted, by call and outcome.",
                &["call", "outcome"],
            ),
            chain_events: registry.counter(
                "lane1_chain_events_total",
                "Task-market events seen in finalized blocks.",
                &["event"],
            ),
            chain_reconnects: registry.counter(
                "lane1_chain_reconnects_total",
                "Times the chain connection was lost and retried.",
                &[],
            ),
            skipped_blocks: registry.counter(
                "lane1_chain_skipped_blocks_total",
                "Finalized blocks skipped unread: the chain node had pruned their state.",
                &[],
            ),
            payments: registry.counter(
                "lane1_payments_total",
                "Payment received for verified tasks (smallest unit).",
                &[],
            ),
            slashes: registry.counter(
                "lane1_slashes_total",
                "Slashes of our account, by cause (preemption_hook, rejected, own_fail_task, requester).",
                &["cause"],
            ),
            chain_outstanding: registry.gauge(
                "lane1_chain_calls_outstanding",
                "Transactions sent and not yet in a block.",
                &[],
            ),
            best_block: registry.gauge("lane1_chain_best_block", "The best block seen.", &[]),
            handled_block: registry.gauge(
                "lane1_chain_handled_block",
                "The last finalized block the node has handled.",
                &[],
            ),
            sidecar_busy: registry.float_counter(
                "lane1_sidecar_busy_seconds_total",
                "Seconds with at least one model run in progress (its rate is the busy ratio).",
                &[],
            ),
            sidecar_up: registry.gauge(
                "lane1_sidecar_up",
                "1 while this sidecar is in the node's set (its health check passes).",
                &["sidecar"],
            ),
            sidecar_runs: registry.counter(
                "lane1_sidecar_runs_total",
                "Runs placed on this sidecar.",
                &["sidecar"],
            ),
            sidecar_cold_runs: registry.counter(
                "lane1_sidecar_cold_runs_total",
                "Runs placed on this sidecar for a model it did not have loaded.",
                &["sidecar"],
            ),
            sidecar_failures: registry.counter(
                "lane1_sidecar_failures_total",
                "Times a run found this sidecar unreachable and it left the set.",
                &["sidecar"],
            ),
            sidecar_loaded_models: registry.gauge(
                "lane1_sidecar_loaded_models",
                "Models this sidecar has loaded.",
                &["sidecar"],
            ),
            sidecar_in_flight: registry.gauge(
                "lane1_sidecar_runs_in_flight",
                "Runs of this node on this sidecar now.",
                &["sidecar"],
            ),
            sidecar_member_busy: registry.float_counter(
                "lane1_sidecar_member_busy_seconds_total",
                "Seconds with at least one run of this node on this sidecar.",
                &["sidecar"],
            ),
            foreign_cancels: registry.counter(
                "lane1_foreign_cancels_total",
                "Runs stopped by a cancel the node did not ask for.",
                &[],
            ),
            stake_breaker_open: registry.gauge(
                "lane1_stake_breaker_open",
                "1 while the stake breaker is open: no new work, no slashing call.",
                &[],
            ),
            held: registry.gauge(
                "lane1_tasks_held",
                "Tasks held for faults that are not theirs, by cause (sidecar, setup, breaker).",
                &["cause"],
            ),
            chain_decode_errors: registry.counter(
                "lane1_chain_decode_errors_total",
                "Finalized blocks whose task-market data the node could not decode (it does not go past them).",
                &[],
            ),
            calls_retracted: registry.counter(
                "lane1_calls_retracted_total",
                "Calls whose best block was retracted and that no branch held; each was sent again.",
                &["call"],
            ),
            foreign_signer: registry.gauge(
                "lane1_foreign_signer",
                "1 once another process was seen signing with this node's key (the node then signs nothing).",
                &[],
            ),
            task_series: Arc::default(),
            registry,
        };
        // Series a dashboard or an alert reads exist from the start, at 0
        // (a family with no series is not exposed at all).
        for cause in SLASH_CAUSES {
            metrics.slashes.with(&[cause]);
        }
        metrics.chain_reconnects.with(&[]);
        metrics.skipped_blocks.with(&[]);
        metrics.payments.with(&[]);
        metrics.in_flight.with(&[]);
        metrics.chain_outstanding.with(&[]);
        metrics.best_block.with(&[]);
        metrics.handled_block.with(&[]);
        metrics.sidecar_busy.add(&[], 0.0);
        metrics.foreign_cancels.with(&[]);
        metrics.chain_decode_errors.with(&[]);
        metrics.foreign_signer.with(&[]);
        for call in ["start_task", "submit_result", "fail_task"] {
            metrics.calls_retracted.with(&[call]);
        }
        metrics.stake_breaker_open.with(&[]);
        for cause in HOLD_CAUSES {
            metrics.held.with(&[cause]);
        }
        metrics
    }
}

/// The causes `lane1_tasks_held` counts.
pub const HOLD_CAUSES: [&str; 3] = ["sidecar", "setup", "breaker"];

/// The causes `lane1_slashes_total` counts.
pub const SLASH_CAUSES: [&str; 4] = ["preemption_hook", "rejected", "own_fail_task", "requester"];

impl crate::layer::metrics::RecordTask for Lane1Metrics {
    fn record_task(
        &self,
        outcome: &'static str,
        lane: crate::task::Lane,
        model: &crate::task::ModelId,
        took: std::time::Duration,
    ) {
        let seconds = took.as_secs_f64();
        {
            let cached = self
                .task_series
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((count, time)) = cached.get(&(outcome, lane, model.clone())) {
                count.inc();
                time.observe(seconds);
                return;
            }
        }
        // One label set for both families (they share their label names).
        let series = labels(&self.tasks.names, &[outcome, lane.as_str(), model.as_str()]);
        let count = self.tasks.family.get_or_create(&series).clone();
        let time = self.task_seconds.family.get_or_create(&series).clone();
        count.inc();
        time.observe(seconds);
        self.task_series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((outcome, lane, model.clone()), (count, time));
    }
}

/// Runs in progress at the sidecar: the in-flight gauge, and the time with
/// at least one run in progress added to `lane1_sidecar_busy_seconds_total`
/// as each busy spell ends.
#[derive(Clone, Debug)]
pub struct SidecarActivity {
    gauge: Gauge,
    busy: FloatCounterVec,
    spell: Arc<Mutex<(u64, Option<std::time::Instant>)>>,
}

impl SidecarActivity {
    /// Counts into `metrics`.
    pub fn new(metrics: &Lane1Metrics) -> Self {
        SidecarActivity {
            gauge: metrics.in_flight.with(&[]),
            busy: metrics.sidecar_busy.clone(),
            spell: Arc::default(),
        }
    }

    fn spell(&self) -> MutexGuard<'_, (u64, Option<std::time::Instant>)> {
        self.spell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::layer::in_flight::InFlightCount for SidecarActivity {
    fn inc(&self) {
        self.gauge.inc();
        let mut spell = self.spell();
        spell.0 += 1;
        if spell.0 == 1 {
            spell.1 = Some(std::time::Instant::now());
        }
    }
    fn dec(&self) {
        self.gauge.dec();
        let mut spell = self.spell();
        spell.0 = spell.0.saturating_sub(1);
        if spell.0 == 0
            && let Some(since) = spell.1.take()
        {
            self.busy.add(&[], since.elapsed().as_secs_f64());
        }
    }
}

impl crate::layer::in_flight::InFlightCount for Gauge {
    fn inc(&self) {
        Gauge::inc(self);
    }
    fn dec(&self) {
        Gauge::dec(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let c = r.counter("c_total", "A counter.", &["a", "b"]);
        c.with(&["x", "y\"z"]).inc();
        c.with(&["x", "y\"z"]).inc();
        let g = r.gauge("g", "A gauge.", &[]);
        g.with(&[]).set(-3);
        let h = r.histogram("h_seconds", "A histogram.", &["k"], &[0.1, 1.0]);
        h.with(&["v"]).observe(0.05);
        h.with(&["v"]).observe(0.5);
        h.with(&["v"]).observe(5.0);
        let text = r.render();
        for line in [
            "# HELP c A counter.",
            "# TYPE c counter",
            "c_total{a=\"x\",b=\"y\\\"z\"} 2",
            "g -3",
            "h_seconds_bucket{le=\"0.1\",k=\"v\"} 1",
            "h_seconds_bucket{le=\"1.0\",k=\"v\"} 2",
            "h_seconds_bucket{le=\"+Inf\",k=\"v\"} 3",
            "h_seconds_count{k=\"v\"} 3",
            "h_seconds_sum{k=\"v\"} 5.55",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }
}
