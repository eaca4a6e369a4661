//! The preempt layer's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower::BoxError;

use super::Registration;
use super::error::Preempted;
use crate::layer::{CancelFuture, Canceller};

/// The response future of [`Preempt`](super::Preempt).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    state: State<F>,
    task_id: crate::task::TaskId,
    /// The run attempt to cancel.
    run_id: crate::task::RunId,
    /// Released as soon as the call finishes, so a finished task is no
    /// longer listed as running.
    registration: Option<Registration>,
}

#[pin_project(project = Proj)]
enum State<F> {
    Running {
        #[pin]
        inner: F,
        #[pin]
        signal: WaitForCancellationFutureOwned,
        canceller: Canceller,
    },
    Cancelling {
        cancel: CancelFuture,
    },
    /// Preempted before it was made (its lane was held): nothing ran.
    Refused,
}

impl<F> std::fmt::Debug for State<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running { .. } => "Running",
            State::Cancelling { .. } => "Cancelling",
            State::Refused => "Refused",
        })
    }
}

impl<F> ResponseFuture<F> {
    /// A call that is not made: its lane is held.
    pub(super) fn refused(registration: Registration) -> Self {
        ResponseFuture {
            state: State::Refused,
            task_id: registration.task_id,
            run_id: crate::task::RunId::first(registration.task_id),
            registration: Some(registration),
        }
    }

    pub(super) fn new(
        inner: F,
        registration: Registration,
        run_id: crate::task::RunId,
        canceller: Canceller,
    ) -> Self {
        ResponseFuture {
            state: State::Running {
                inner,
                signal: registration.token.clone().cancelled_owned(),
                canceller,
            },
            task_id: registration.task_id,
            run_id,
            registration: Some(registration),
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
                    signal,
                    canceller,
                } => {
                    // The inner call first: a finished task is not preempted.
                    if let Poll::Ready(r) = inner.poll(cx) {
                        this.registration.take();
                        return Poll::Ready(r.map_err(Into::into));
                    }
                    ready!(signal.poll(cx));
                    let reason = this
                        .registration
                        .as_ref()
                        .map_or(super::PreemptReason::Requested, Registration::reason);
                    let task_id = *this.task_id;
                    tracing::info!(%task_id, reason = reason.as_str(), "preempting task");
                    let cancel = canceller.cancel(*this.run_id, reason.as_str());
                    // Replacing the state drops the inner call.
                    this.state.set(State::Cancelling { cancel });
                }
                Proj::Refused => {
                    let task_id = *this.task_id;
                    let reason = this
                        .registration
                        .take()
                        .map_or(super::PreemptReason::Requested, |r| r.reason());
                    tracing::info!(%task_id, reason = reason.as_str(), "not started: its lane is held");
                    return Poll::Ready(Err(Preempted {
                        task_id,
                        reason,
                        sidecar_confirmed: true,
                    }
                    .into()));
                }
                Proj::Cancelling { cancel } => {
                    let confirmed = ready!(cancel.as_mut().poll(cx));
                    let task_id = *this.task_id;
                    if let Err(e) = &confirmed {
                        tracing::warn!(%task_id, error = %e, "preempted task not confirmed stopped");
                    }
                    let reason = this
                        .registration
                        .take()
                        .map_or(super::PreemptReason::Requested, |r| r.reason());
                    return Poll::Ready(Err(Preempted {
                        task_id,
                        reason,
                        sidecar_confirmed: confirmed.is_ok(),
                    }
                    .into()));
                }
            }
        }
    }
}
