//! The metrics layer's response future and drop guard.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::Instant;

use super::Outcome;
use crate::telemetry::metrics::Lane1Metrics;

/// Records one task's outcome and duration exactly once: when its call
/// finishes, or — if the call is dropped first (preempted, timed out, shut
/// down) — when it is dropped, as `dropped`.
#[derive(Debug)]
pub(super) struct Guard {
    metrics: Lane1Metrics,
    lane: &'static str,
    model: String,
    started: Instant,
    recorded: bool,
}

impl Guard {
    pub(super) fn new(metrics: Lane1Metrics, lane: &'static str, model: String) -> Self {
        Guard {
            metrics,
            lane,
            model,
            started: Instant::now(),
            recorded: false,
        }
    }

    fn record(&mut self, outcome: &str) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let labels = [outcome, self.lane, self.model.as_str()];
        self.metrics.tasks.with(&labels).inc();
        self.metrics
            .task_seconds
            .with(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.record("dropped");
    }
}

/// The response future of [`Metrics`](super::Metrics).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    guard: Guard,
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, guard: Guard) -> Self {
        ResponseFuture { inner, guard }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: Outcome,
    E: Outcome,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let outcome = match &result {
            Ok(r) => r.outcome(),
            Err(e) => e.outcome(),
        };
        this.guard.record(outcome);
        Poll::Ready(result)
    }
}
