//! Counts and times every task through the stack, by outcome, lane and model,
//! into a [`RecordTask`] sink (the crate's `Lane1Metrics` records
//! `lane1_tasks_total` and `lane1_task_duration_seconds`). The record is made
//! by a drop guard, so a task whose future is dropped — preempted, timed out,
//! shut down — is still counted (as `dropped`). The layer adds no way to fail:
//! errors pass through unchanged.
//!
//! ```
//! use nsn_lane1::layer::metrics::MetricsLayer;
//! use nsn_lane1::telemetry::metrics::Lane1Metrics;
//!
//! let metrics = Lane1Metrics::default();
//! let layer = MetricsLayer::new(metrics.clone());
//! # let _ = layer;
//! ```

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{BoxError, Service};

use crate::layer::preempt::Preempted;
use crate::layer::timeout::Elapsed;
use crate::layer::{TaskRequest, cause};
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

/// The outcome label of a response or an error.
pub trait Outcome {
    /// A short label (`ok`, `failed`, `preempted`, …).
    fn outcome(&self) -> &'static str;
}

impl Outcome for BoxError {
    fn outcome(&self) -> &'static str {
        if cause::<Preempted>(self.as_ref()).is_some() {
            "preempted"
        } else if cause::<Elapsed>(self.as_ref()).is_some() {
            "timed_out"
        } else {
            "error"
        }
    }
}

impl Outcome for crate::task::TaskId {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

impl Outcome for () {
    fn outcome(&self) -> &'static str {
        "ok"
    }
}

/// Records task metrics; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Metrics<S, M> {
    inner: S,
    sink: M,
}

impl<S, M> Metrics<S, M> {
    /// Wraps `inner`, recording into `sink`.
    pub fn new(inner: S, sink: M) -> Self {
        Metrics { inner, sink }
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

impl<S, M, R> Service<R> for Metrics<S, M>
where
    S: Service<R>,
    M: RecordTask,
    S::Response: Outcome,
    S::Error: Outcome,
    R: TaskRequest,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let guard = future::Guard::new(self.sink.clone(), req.lane(), req.model().clone());
        ResponseFuture::new(self.inner.call(req), guard)
    }
}
