//! The preempt layer's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower::BoxError;

use super::Registration;
use super::error::Preempted;
use crate::layer::Canceller;
use crate::layer::cancel::{Cancellable, Stopped};

/// The response future of [`Preempt`](super::Preempt).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    /// The inner call (`None`: preempted before it was made, its lane
    /// held: nothing ran).
    #[pin]
    call: Option<Cancellable<F>>,
    #[pin]
    signal: Option<WaitForCancellationFutureOwned>,
    cancelling: bool,
    task_id: crate::task::TaskId,
    /// The run attempt to cancel.
    run_id: crate::task::RunId,
    /// Released as soon as the call finishes, so a finished task is no
    /// longer listed as running.
    registration: Option<Registration>,
}

impl<F> ResponseFuture<F> {
    /// A call that is not made: its lane is held.
    pub(super) fn refused(registration: Registration) -> Self {
        ResponseFuture {
            call: None,
            signal: None,
            cancelling: false,
            task_id: registration.task_id,
            run_id: crate::task::RunId::first(registration.task_id),
            registration: Some(registration),
        }
    }
}

impl<F, T, E> ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    pub(super) fn new(
        inner: F,
        registration: Registration,
        run_id: crate::task::RunId,
        canceller: Canceller,
    ) -> Self {
        ResponseFuture {
            call: Some(Cancellable::new(inner, canceller)),
            signal: Some(registration.token.clone().cancelled_owned()),
            cancelling: false,
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
        let this = self.project();
        let task_id = *this.task_id;
        let reason = |registration: &mut Option<Registration>| {
            registration
                .take()
                .map_or(super::PreemptReason::Requested, |r| r.reason())
        };
        let Some(mut call) = this.call.as_pin_mut() else {
            let reason = reason(this.registration);
            tracing::info!(%task_id, reason = reason.as_str(), "not started: its lane is held");
            return Poll::Ready(Err(Preempted {
                task_id,
                reason,
                sidecar_confirmed: true,
            }
            .into()));
        };
        if !*this.cancelling {
            // The inner call first: a finished task is not preempted.
            if let Poll::Ready(r) = call.as_mut().poll_call(cx) {
                this.registration.take();
                return Poll::Ready(r);
            }
            if let Some(signal) = this.signal.as_pin_mut() {
                ready!(signal.poll(cx));
            }
            let why = this
                .registration
                .as_ref()
                .map_or(super::PreemptReason::Requested, Registration::reason);
            tracing::info!(%task_id, reason = why.as_str(), "preempting task");
            call.as_mut().cancel(*this.run_id, why.as_str());
            *this.cancelling = true;
        }
        let sidecar_confirmed = match ready!(call.poll_stopped(cx)) {
            // It finished before the cancel took: the work is done, and the
            // slot is free all the same.
            Stopped::Finished(result) => {
                this.registration.take();
                return Poll::Ready(Ok(result));
            }
            Stopped::Confirmed(by) => {
                tracing::debug!(%task_id, ?by, "preempted task stopped");
                true
            }
            Stopped::Unconfirmed(e) => {
                tracing::warn!(%task_id, error = %e, "preempted task not confirmed stopped");
                false
            }
        };
        Poll::Ready(Err(Preempted {
            task_id,
            reason: reason(this.registration),
            sidecar_confirmed,
        }
        .into()))
    }
}
