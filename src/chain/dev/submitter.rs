//! Submitting calls to the dev chain.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::pallet::Origin;
use super::{BlockMode, Shared, lock, produce_block};
use crate::chain::{Inclusion, MarketCall, Pooled, SubmitError};
use crate::task::AccountId;

/// Submits calls to the dev chain as one origin: a
/// `tower::Service<MarketCall>` that answers with the pool's verdict — a
/// [`Pooled`] transaction, awaited for its [`Inclusion`] — or why the pool
/// refused it. Nonces are assigned by the chain's pool (the account's next
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

    /// Submits with an explicit nonce and waits for the inclusion.
    pub fn submit_with_nonce(&self, call: MarketCall, nonce: u64) -> SubmitFuture {
        let pooled = self.pool(call, Some(nonce));
        Box::pin(async move { pooled?.await })
    }

    /// Puts a call into the pool; in instant mode, builds its block.
    fn pool(&self, call: MarketCall, nonce: Option<u64>) -> Result<Pooled, SubmitError> {
        let (tx, rx) = oneshot::channel();
        let mut st = lock(&self.shared);
        let nonce = st.push(self.origin, call, nonce, Some(tx))?;
        if st.mode == BlockMode::Instant {
            while st.has_ready() {
                produce_block(&self.shared, &mut st);
            }
        }
        let nonce = matches!(self.origin, Origin::Signed(_)).then_some(nonce);
        Ok(Pooled::new(nonce, async move {
            rx.await.unwrap_or(Err(SubmitError::Closed))
        }))
    }
}

impl tower::Service<MarketCall> for DevSubmitter {
    type Response = Pooled;
    type Error = SubmitError;
    type Future = std::future::Ready<Result<Pooled, SubmitError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if lock(&self.shared).closed {
            return Poll::Ready(Err(SubmitError::Closed));
        }
        Poll::Ready(Ok(()))
    }

    /// Answers at once with the pool's verdict (the dev pool validates
    /// synchronously); the [`Pooled`] resolves when the transaction's block
    /// is built.
    fn call(&mut self, call: MarketCall) -> Self::Future {
        std::future::ready(self.pool(call, None))
    }
}

/// A whole dev-chain submission with a nonce set by hand: the pool's
/// verdict, then the inclusion.
pub type SubmitFuture = Pin<Box<dyn Future<Output = Result<Inclusion, SubmitError>> + Send>>;
