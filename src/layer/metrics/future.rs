//! The metrics layer's response future and drop guard.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::Instant;

use super::{ClassifyOutcome, RecordTask};
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
pub struct ResponseFuture<F, M: RecordTask, C> {
    #[pin]
    inner: F,
    guard: Guard<M>,
    classify: C,
}

impl<F, M: RecordTask, C> ResponseFuture<F, M, C> {
    pub(super) fn new(inner: F, guard: Guard<M>, classify: C) -> Self {
        ResponseFuture {
            inner,
            guard,
            classify,
        }
    }
}

impl<F, M, C, T, E> Future for ResponseFuture<F, M, C>
where
    M: RecordTask,
    C: ClassifyOutcome<T, E>,
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        this.guard.record(this.classify.classify(&result));
        Poll::Ready(result)
    }
}
