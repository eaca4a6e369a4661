//! A small Prometheus registry: labelled counters, gauges and histograms,
//! rendered in the text exposition format for `/metrics`.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

type Labels = Vec<String>;

#[derive(Debug)]
enum Kind {
    Counter(Mutex<BTreeMap<Labels, Arc<AtomicU64>>>),
    Gauge(Mutex<BTreeMap<Labels, Arc<AtomicI64>>>),
    Histogram(Vec<f64>, Mutex<BTreeMap<Labels, Arc<HistogramCell>>>),
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    label_names: Vec<&'static str>,
    kind: Kind,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A set of metric families. Clones share one registry.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    families: Arc<Mutex<Vec<Arc<Family>>>>,
}

impl Registry {
    fn add(&self, family: Family) -> Arc<Family> {
        let family = Arc::new(family);
        lock(&self.families).push(family.clone());
        family
    }

    /// Registers a counter family.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
    ) -> CounterVec {
        CounterVec(self.add(Family {
            name,
            help,
            label_names: labels.to_vec(),
            kind: Kind::Counter(Mutex::default()),
        }))
    }

    /// Registers a gauge family.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
    ) -> GaugeVec {
        GaugeVec(self.add(Family {
            name,
            help,
            label_names: labels.to_vec(),
            kind: Kind::Gauge(Mutex::default()),
        }))
    }

    /// Registers a histogram family with these bucket upper bounds.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[&'static str],
        buckets: &[f64],
    ) -> HistogramVec {
        HistogramVec(self.add(Family {
            name,
            help,
            label_names: labels.to_vec(),
            kind: Kind::Histogram(buckets.to_vec(), Mutex::default()),
        }))
    }

    /// Every family in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in lock(&self.families).iter() {
            let kind = match f.kind {
                Kind::Counter(_) => "counter",
                Kind::Gauge(_) => "gauge",
                Kind::Histogram(..) => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {kind}", f.name);
            match &f.kind {
                Kind::Counter(series) => {
                    for (labels, v) in lock(series).iter() {
                        let l = label_text(&f.label_names, labels, None);
                        let _ = writeln!(out, "{}{l} {}", f.name, v.load(Ordering::Relaxed));
                    }
                }
                Kind::Gauge(series) => {
                    for (labels, v) in lock(series).iter() {
                        let l = label_text(&f.label_names, labels, None);
                        let _ = writeln!(out, "{}{l} {}", f.name, v.load(Ordering::Relaxed));
                    }
                }
                Kind::Histogram(bounds, series) => {
                    for (labels, h) in lock(series).iter() {
                        let counts = lock(&h.counts);
                        let mut cumulative = 0u64;
                        for (i, bound) in bounds.iter().enumerate() {
                            cumulative += counts.buckets[i];
                            let le = format!("{bound}");
                            let l = label_text(&f.label_names, labels, Some(&le));
                            let _ = writeln!(out, "{}_bucket{l} {cumulative}", f.name);
                        }
                        let l = label_text(&f.label_names, labels, Some("+Inf"));
                        let _ = writeln!(out, "{}_bucket{l} {}", f.name, counts.count);
                        let l = label_text(&f.label_names, labels, None);
                        let _ = writeln!(out, "{}_sum{l} {}", f.name, counts.sum);
                        let _ = writeln!(out, "{}_count{l} {}", f.name, counts.count);
                    }
                }
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(names: &[&'static str], values: &[String], le: Option<&str>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn key(family: &Family, values: &[&str]) -> Labels {
    // A wrong label count is a programming error in this crate; pad or cut
    // rather than panic in a metrics path.
    (0..family.label_names.len())
        .map(|i| values.get(i).copied().unwrap_or("").to_owned())
        .collect()
}

/// A counter family.
#[derive(Clone, Debug)]
pub struct CounterVec(Arc<Family>);

impl CounterVec {
    /// The counter with these label values.
    pub fn with(&self, values: &[&str]) -> Counter {
        let Kind::Counter(series) = &self.0.kind else {
            unreachable!("a CounterVec holds a counter family")
        };
        Counter(
            lock(series)
                .entry(key(&self.0, values))
                .or_default()
                .clone(),
        )
    }
}

/// One counter.
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge family.
#[derive(Clone, Debug)]
pub struct GaugeVec(Arc<Family>);

impl GaugeVec {
    /// The gauge with these label values.
    pub fn with(&self, values: &[&str]) -> Gauge {
        let Kind::Gauge(series) = &self.0.kind else {
            unreachable!("a GaugeVec holds a gauge family")
        };
        Gauge(
            lock(series)
                .entry(key(&self.0, values))
                .or_default()
                .clone(),
        )
    }
}

/// One gauge.
#[derive(Clone, Debug)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct HistogramCounts {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

#[derive(Debug)]
struct HistogramCell {
    bounds: Vec<f64>,
    counts: Mutex<HistogramCounts>,
}

/// A histogram family.
#[derive(Clone, Debug)]
pub struct HistogramVec(Arc<Family>);

impl HistogramVec {
    /// The histogram with these label values.
    pub fn with(&self, values: &[&str]) -> Histogram {
        let Kind::Histogram(bounds, series) = &self.0.kind else {
            unreachable!("a HistogramVec holds a histogram family")
        };
        Histogram(
            lock(series)
                .entry(key(&self.0, values))
                .or_insert_with(|| {
                    Arc::new(HistogramCell {
                        bounds: bounds.clone(),
                        counts: Mutex::new(HistogramCounts {
                            buckets: vec![0; bounds.len()],
                            count: 0,
                            sum: 0.0,
                        }),
                    })
                })
                .clone(),
        )
    }
}

/// One histogram.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCell>);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, v: f64) {
        let mut c = lock(&self.0.counts);
        if let Some(i) = self.0.bounds.iter().position(|b| v <= *b) {
            c.buckets[i] += 1;
        }
        c.count += 1;
        c.sum += v;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        lock(&self.0.counts).count
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
    /// Payments received for verified tasks, in the chain's smallest unit.
    pub payments: CounterVec,
}

impl Default for Lane1Metrics {
    fn default() -> Self {
        Lane1Metrics::new(Registry::default())
    }
}

impl Lane1Metrics {
    /// Registers the executor's metrics in `registry`.
    pub fn new(registry: Registry) -> Self {
        Lane1Metrics {
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
            payments: registry.counter(
                "lane1_payments_total",
                "Payment received for verified tasks (smallest unit).",
                &[],
            ),
            registry,
        }
    }
}

impl crate::layer::metrics::RecordTask for Lane1Metrics {
    fn record_task(
        &self,
        outcome: &str,
        lane: crate::task::Lane,
        model: &crate::task::ModelId,
        took: std::time::Duration,
    ) {
        let labels = [outcome, lane.as_str(), model.as_str()];
        self.tasks.with(&labels).inc();
        self.task_seconds.with(&labels).observe(took.as_secs_f64());
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
        assert!(text.contains("# TYPE c_total counter"));
        assert!(text.contains("c_total{a=\"x\",b=\"y\\\"z\"} 2"), "{text}");
        assert!(text.contains("g -3"));
        assert!(text.contains("h_seconds_bucket{k=\"v\",le=\"0.1\"} 1"));
        assert!(text.contains("h_seconds_bucket{k=\"v\",le=\"1\"} 2"));
        assert!(text.contains("h_seconds_bucket{k=\"v\",le=\"+Inf\"} 3"));
        assert!(text.contains("h_seconds_count{k=\"v\"} 3"));
        assert!(text.contains("h_seconds_sum{k=\"v\"} 5.55"));
    }
}
