//! The timeout's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::Sleep;
use tower::BoxError;

use super::error::Elapsed;
use crate::layer::Canceller;
use crate::layer::cancel::{Cancellable, Stopped};
use crate::task::{RunId, TaskId};

/// The response future of [`Timeout`](super::Timeout).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    /// The inner call; once the limit passes, it is being stopped.
    #[pin]
    call: Cancellable<F>,
    #[pin]
    sleep: Sleep,
    cancelling: bool,
    task_id: TaskId,
    run_id: RunId,
    limit: Duration,
}

impl<F, T, E> ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    pub(super) fn new(
        inner: F,
        limit: Duration,
        backstop: Duration,
        run_id: RunId,
        canceller: Canceller,
    ) -> Self {
        ResponseFuture {
            call: Cancellable::new(inner, canceller),
            sleep: tokio::time::sleep(backstop),
            cancelling: false,
            task_id: run_id.task,
            run_id,
            limit,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.cancelling {
            // The inner call first: a ready answer is never thrown away,
            // and an inner error keeps its own identity even once the limit
            // has passed (the sidecar's own timeout says so itself); only
            // the timer firing is `Elapsed`.
            if let Poll::Ready(r) = this.call.as_mut().poll_call(cx) {
                return Poll::Ready(r);
            }
            ready!(this.sleep.poll(cx));
            tracing::warn!(task_id = %this.task_id, limit = ?this.limit, "task timed out");
            this.call
                .as_mut()
                .cancel(*this.run_id, "execution timed out");
            *this.cancelling = true;
        }
        let sidecar_confirmed = match ready!(this.call.poll_stopped(cx)) {
            // It finished as it was being stopped: its result stands.
            Stopped::Finished(result) => return Poll::Ready(Ok(result)),
            Stopped::Confirmed(by) => {
                tracing::debug!(task_id = %this.task_id, ?by, "timed-out task stopped");
                true
            }
            Stopped::Unconfirmed(e) => {
                tracing::warn!(task_id = %this.task_id, error = %e, "timed-out task not confirmed stopped");
                false
            }
        };
        Poll::Ready(Err(Elapsed {
            task_id: *this.task_id,
            after: *this.limit,
            sidecar_confirmed,
        }
        .into()))
    }
}
