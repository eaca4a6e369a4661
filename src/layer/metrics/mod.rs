//! Counts and times every task through the stack, by outcome, lane and model
//! (`lane1_tasks_total`, `lane1_task_duration_seconds`). The record is made by a drop guard, so a task whose future
//! is dropped — preempted, timed out, shut down — is still counted (as
//! `dropped`). The layer adds no way to fail: errors pass through unchanged.
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

use tower::{BoxError, Service};

use crate::layer::TaskRequest;
use crate::layer::preempt::Preempted;
use crate::layer::timeout::Elapsed;
use crate::telemetry::metrics::Lane1Metrics;

pub mod future;
mod layer;

pub use future::ResponseFuture;
pub use layer::MetricsLayer;

/// The outcome label of a response or an error.
pub trait Outcome {
    /// A short label (`ok`, `failed`, `preempted`, …).
    fn outcome(&self) -> &'static str;
}

impl Outcome for BoxError {
    fn outcome(&self) -> &'static str {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self.as_ref());
        while let Some(e) = cause {
            if e.is::<Preempted>() {
                return "preempted";
            }
            if e.is::<Elapsed>() {
                return "timed_out";
            }
            cause = e.source();
        }
        "error"
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
pub struct Metrics<S> {
    inner: S,
    metrics: Lane1Metrics,
}

impl<S> Metrics<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Lane1Metrics) -> Self {
        Metrics { inner, metrics }
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

impl<S, R> Service<R> for Metrics<S>
where
    S: Service<R>,
    S::Response: Outcome,
    S::Error: Outcome,
    R: TaskRequest,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let guard = future::Guard::new(
            self.metrics.clone(),
            req.lane().as_str(),
            req.model().as_str().to_owned(),
        );
        ResponseFuture::new(self.inner.call(req), guard)
    }
}
