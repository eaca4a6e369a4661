//! Counts and times every task through the stack, by outcome, lane and model,
//! into a [`RecordTask`] sink (the crate's `Lane1Metrics` records
//! `lane1_tasks_total` and `lane1_task_duration_seconds`). The record is made
//! by a drop guard, so a task whose future is dropped — preempted, timed out,
//! shut down — is still counted (as `dropped`). The layer adds no way to fail:
//! errors pass through unchanged.
//!
//! What an outcome is called is the caller's to say: the layer takes a
//! [`ClassifyOutcome`] (any `Fn(&Result<T, E>) -> &'static str` is one), so it
//! knows nothing of the errors its neighbours make. The standard stack's is
//! the composition root's `DefaultClassifier`.
//!
//! ```
//! use nsn_lane1::layer::metrics::MetricsLayer;
//! use nsn_lane1::telemetry::metrics::Lane1Metrics;
//!
//! let metrics = Lane1Metrics::default();
//! let layer = MetricsLayer::new(metrics.clone(), |r: &Result<(), tower::BoxError>| {
//!     if r.is_ok() { "ok" } else { "error" }
//! });
//! # let _ = layer;
//! ```

use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use crate::layer::TaskRequest;
use crate::task::{Lane, ModelId};

pub mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::MetricsLayer;

/// Where the layer records each task: its outcome label, lane, model and
/// how long it took.
pub trait RecordTask: Clone + std::fmt::Debug {
    /// Records one finished (or dropped) task.
    fn record_task(&self, outcome: &'static str, lane: Lane, model: &ModelId, took: Duration);
}

/// Names a call's outcome for the `outcome` label (`ok`, `failed`,
/// `preempted`, …). Closures `Fn(&Result<T, E>) -> &'static str` are
/// classifiers.
pub trait ClassifyOutcome<T, E>: Clone {
    /// The label for `result`.
    fn classify(&self, result: &Result<T, E>) -> &'static str;
}

impl<T, E, F> ClassifyOutcome<T, E> for F
where
    F: Fn(&Result<T, E>) -> &'static str + Clone,
{
    fn classify(&self, result: &Result<T, E>) -> &'static str {
        self(result)
    }
}

/// Records task metrics; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Metrics<S, M, C> {
    inner: S,
    sink: M,
    classify: C,
}

impl<S, M, C> Metrics<S, M, C> {
    /// Wraps `inner`, recording into `sink` under the labels `classify` gives.
    pub fn new(inner: S, sink: M, classify: C) -> Self {
        Metrics {
            inner,
            sink,
            classify,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, M, C, R> Service<R> for Metrics<S, M, C>
where
    S: Service<R>,
    M: RecordTask,
    C: ClassifyOutcome<S::Response, S::Error>,
    R: TaskRequest,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, M, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let guard = future::Guard::new(self.sink.clone(), req.lane(), req.model().clone());
        ResponseFuture::new(self.inner.call(req), guard, self.classify.clone())
    }
}
