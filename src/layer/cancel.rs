//! Stopping a call where it runs, shared by the layers that stop calls (the
//! timeout when its limit passes, preemption when Lane 0 or the chain needs
//! the slot).
//!
//! A stopped call is confirmed stopped by the sidecar's own answer first:
//! the layer keeps waiting for the call it cancels, and the run's answer
//! (`CANCELLED`, or whatever it ended with) is the proof. The
//! [`Canceller`]'s future — `CancelTask`, then the run's status — runs
//! beside it as the fallback for a sidecar that does not answer the call
//! (NSN's only marks a cancelled run and lets the model go on); whichever
//! ends first decides, and the other is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::BoxError;

use super::{CancelFuture, Canceller};
use crate::task::RunId;

/// How a cancelled call ended.
#[derive(Debug)]
pub(crate) enum Stopped<T> {
    /// It answered with a result before it stopped: the work is done.
    Finished(T),
    /// It is confirmed stopped (by its answer or, failing that, by the
    /// sidecar's status).
    Confirmed(ConfirmedBy),
    /// Neither its answer nor the sidecar's status confirmed it stopped in
    /// time.
    Unconfirmed(BoxError),
}

/// What confirmed a cancelled call stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConfirmedBy {
    /// The call's own answer.
    Answer,
    /// The canceller (the sidecar's status, or a call it did not know).
    Canceller,
}

/// A call that can be cancelled while it runs: the layers' one way of
/// stopping their inner call.
#[pin_project]
pub(crate) struct Cancellable<F> {
    /// `None` once it answered (or was given up).
    #[pin]
    inner: Option<F>,
    canceller: Canceller,
    cancel: Option<CancelFuture>,
}

impl<F> std::fmt::Debug for Cancellable<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancellable")
            .field("answered", &self.inner.is_none())
            .field("cancelling", &self.cancel.is_some())
            .finish()
    }
}

impl<F, T, E> Cancellable<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    pub(crate) fn new(inner: F, canceller: Canceller) -> Self {
        Cancellable {
            inner: Some(inner),
            canceller,
            cancel: None,
        }
    }

    /// Polls the call (before any cancel).
    pub(crate) fn poll_call(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, BoxError>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let answer = std::task::ready!(inner.poll(cx));
        this.inner.set(None);
        Poll::Ready(answer.map_err(Into::into))
    }

    /// Starts stopping the call: the canceller asks the sidecar, and the
    /// call is still waited for.
    pub(crate) fn cancel(self: Pin<&mut Self>, run: RunId, reason: &'static str) {
        let this = self.project();
        if this.cancel.is_none() {
            *this.cancel = Some(this.canceller.cancel(run, reason));
        }
    }

    /// Polls a started cancel to its end.
    pub(crate) fn poll_stopped(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stopped<T>> {
        let mut this = self.project();
        if let Some(inner) = this.inner.as_mut().as_pin_mut()
            && let Poll::Ready(answer) = inner.poll(cx)
        {
            this.inner.set(None);
            match answer {
                Ok(result) => {
                    *this.cancel = None;
                    return Poll::Ready(Stopped::Finished(result));
                }
                Err(e) => {
                    let e: BoxError = e.into();
                    if this.canceller.is_stop_answer(e.as_ref()) {
                        // The run's own end: the proof that it stopped.
                        *this.cancel = None;
                        return Poll::Ready(Stopped::Confirmed(ConfirmedBy::Answer));
                    }
                    // A broken call proves nothing: the cancel decides.
                }
            }
        }
        let Some(cancel) = this.cancel.as_mut() else {
            // No cancel started and no answer: nothing to wait for but the call.
            return Poll::Pending;
        };
        let confirmed = std::task::ready!(cancel.as_mut().poll(cx));
        // Stop waiting for the call: it is stopped, or will not be confirmed.
        this.inner.set(None);
        *this.cancel = None;
        Poll::Ready(match confirmed {
            Ok(()) => Stopped::Confirmed(ConfirmedBy::Canceller),
            Err(e) => Stopped::Unconfirmed(e),
        })
    }
}
