//! The metrics layer's response future and drop guard.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::Instant;

use super::{Outcome, RecordTask};
use crate::task::{Lane, ModelId};

/// Records one task's outcome and duration exactly once: when its call
/// finishes, or — if the call is dropped first (preempted, timed out, shut
/// down) — when it is dropped, as `dropped`.
#[derive(Debug)]
pub(super) struct Guard<M: RecordTask> {
    sink: M,
    lane: Lane,
    model: ModelId,
    started: Instant,
    recorded: bool,
}

impl<M: RecordTask> Guard<M> {
    pub(super) fn new(sink: M, lane: Lane, model: ModelId) -> Self {
        Guard {
            sink,
            lane,
            model,
            started: Instant::now(),
            recorded: false,
        }
    }

    fn record(&mut self, outcome: &'static str) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        self.sink
            .record_task(outcome, self.lane, &self.model, self.started.elapsed());
    }
}

impl<M: RecordTask> Drop for Guard<M> {
    fn drop(&mut self) {
        self.record("dropped");
    }
}

/// The response future of [`Metrics`](super::Metrics).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F, M: RecordTask> {
    #[pin]
    inner: F,
    guard: Guard<M>,
}

impl<F, M: RecordTask> ResponseFuture<F, M> {
    pub(super) fn new(inner: F, guard: Guard<M>) -> Self {
        ResponseFuture { inner, guard }
    }
}

impl<F, M, T, E> Future for ResponseFuture<F, M>
where
    M: RecordTask,
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
