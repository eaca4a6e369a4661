//! The timeout's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::Sleep;
use tower::BoxError;

use super::error::Elapsed;
use crate::layer::{CancelFuture, Canceller};
use crate::task::{RunId, TaskId};

/// The response future of [`Timeout`](super::Timeout).
#[pin_project(project = StateProj)]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    state: State<F>,
    task_id: TaskId,
    run_id: RunId,
    limit: Duration,
}

#[pin_project(project = Proj)]
enum State<F> {
    /// The inner call runs against the timer.
    Running {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        canceller: Canceller,
    },
    /// The limit passed; the inner call is dropped and the sidecar task is
    /// being stopped.
    Cancelling { cancel: CancelFuture },
}

impl<F> std::fmt::Debug for State<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running { .. } => "Running",
            State::Cancelling { .. } => "Cancelling",
        })
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        limit: Duration,
        backstop: Duration,
        run_id: RunId,
        canceller: Canceller,
    ) -> Self {
        ResponseFuture {
            state: State::Running {
                inner,
                sleep: tokio::time::sleep(backstop),
                canceller,
            },
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
        loop {
            match this.state.as_mut().project() {
                Proj::Running {
                    inner,
                    sleep,
                    canceller,
                } => {
                    // The inner call first: a ready answer is never thrown
                    // away, and an inner error keeps its own identity even
                    // once the limit has passed (the sidecar's own timeout
                    // says so itself); only the timer firing is `Elapsed`.
                    if let Poll::Ready(r) = inner.poll(cx) {
                        return Poll::Ready(r.map_err(Into::into));
                    }
                    ready!(sleep.poll(cx));
                    tracing::warn!(task_id = %this.task_id, limit = ?this.limit, "task timed out");
                    let cancel = canceller.cancel(*this.run_id, "execution timed out");
                    // Dropping the inner call here stops waiting for it.
                    this.state.set(State::Cancelling { cancel });
                }
                Proj::Cancelling { cancel } => {
                    let confirmed = ready!(cancel.as_mut().poll(cx));
                    if let Err(e) = &confirmed {
                        tracing::warn!(task_id = %this.task_id, error = %e, "timed-out task not confirmed stopped");
                    }
                    return Poll::Ready(Err(Elapsed {
                        task_id: *this.task_id,
                        after: *this.limit,
                        sidecar_confirmed: confirmed.is_ok(),
                    }
                    .into()));
                }
            }
        }
    }
}
