//! Submitting calls to the dev chain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::pallet::Origin;
use super::{BlockMode, Shared, lock, produce_block};
use crate::chain::{Inclusion, MarketCall, SubmitError};
use crate::task::AccountId;

/// Submits calls to the dev chain as one origin: a
/// `tower::Service<MarketCall>` that answers with the call's [`Inclusion`] or
/// why it failed. Nonces are assigned by the chain's pool (the account's next
/// index); [`submit_with_nonce`](Self::submit_with_nonce) sets one by hand.
#[derive(Clone)]
pub struct DevSubmitter {
    pub(super) shared: Arc<Shared>,
    pub(super) origin: Origin,
}

impl std::fmt::Debug for DevSubmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSubmitter")
            .field("origin", &self.origin)
            .finish()
    }
}

impl DevSubmitter {
    /// The origin this submitter signs as.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The account this submitter signs as (`None` for root).
    pub fn account(&self) -> Option<AccountId> {
        match self.origin {
            Origin::Signed(a) => Some(a),
            Origin::Root => None,
        }
    }

    /// Submits with an explicit nonce.
    pub fn submit_with_nonce(&self, call: MarketCall, nonce: u64) -> SubmitFuture {
        self.submit(call, Some(nonce))
    }

    fn submit(&self, call: MarketCall, nonce: Option<u64>) -> SubmitFuture {
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&self.shared);
        if let Err(e) = st.push(self.origin, call, nonce, Some(tx)) {
            return SubmitFuture {
                inner: SubmitState::Failed(Some(e)),
            };
        }
        if st.mode == BlockMode::Instant {
            while st.has_ready() {
                produce_block(&self.shared, &mut st);
            }
        }
        SubmitFuture {
            inner: SubmitState::Waiting(rx),
        }
    }
}

impl tower::Service<MarketCall> for DevSubmitter {
    type Response = Inclusion;
    type Error = SubmitError;
    type Future = SubmitFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if lock(&self.shared).closed {
            return Poll::Ready(Err(SubmitError::Closed));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        self.submit(call, None)
    }
}

/// The future of a dev-chain submission: resolves when the transaction's
/// block is built.
#[derive(Debug)]
pub struct SubmitFuture {
    inner: SubmitState,
}

#[derive(Debug)]
enum SubmitState {
    Waiting(oneshot::Receiver<Result<Inclusion, SubmitError>>),
    Failed(Option<SubmitError>),
}

impl Future for SubmitFuture {
    type Output = Result<Inclusion, SubmitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            SubmitState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(SubmitError::Closed)),
                Poll::Pending => Poll::Pending,
            },
            SubmitState::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(SubmitError::Closed))),
        }
    }
}
