//! Every chain call of the node counted: calls, outcomes, transactions
//! outstanding, and the nonces it signs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::Service;

use crate::chain::{MarketCall, Pooled, SubmitError};

/// The account's submitter with its calls counted:
/// `lane1_chain_calls_total{call,outcome}` once each call's fate is known
/// (`refused` by the pool, `included`, `failed` in its block, `lost`), and
/// `lane1_chain_calls_outstanding` while it is between the pool and a block.
///
/// With [`own_nonces`](Self::own_nonces) it also records every nonce it
/// signs with, and signs nothing more once another process was seen to sign
/// with the key ([`crate::signer`]).
#[derive(Clone, Debug)]
pub struct CountedCalls<S> {
    inner: S,
    metrics: crate::telemetry::metrics::Lane1Metrics,
    nonces: Option<crate::signer::OwnNonces>,
}

impl<S> CountedCalls<S> {
    /// Counts `inner`'s calls into `metrics`.
    pub fn new(inner: S, metrics: crate::telemetry::metrics::Lane1Metrics) -> Self {
        CountedCalls {
            inner,
            metrics,
            nonces: None,
        }
    }

    /// Records the nonces signed in `nonces`, and refuses every call once
    /// it has seen another signer.
    pub fn own_nonces(mut self, nonces: crate::signer::OwnNonces) -> Self {
        self.nonces = Some(nonces);
        self
    }
}

/// One transaction between the pool and a block, for as long as it lives.
struct Outstanding(crate::telemetry::metrics::Gauge);

impl Outstanding {
    fn new(gauge: crate::telemetry::metrics::Gauge) -> Self {
        gauge.inc();
        Outstanding(gauge)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S> Service<MarketCall> for CountedCalls<S>
where
    S: Service<MarketCall, Response = Pooled, Error = SubmitError>,
    S::Future: Send + 'static,
{
    type Response = Pooled;
    type Error = SubmitError;
    type Future = Pin<Box<dyn Future<Output = Result<Pooled, SubmitError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SubmitError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        let name = call.name();
        let metrics = self.metrics.clone();
        if let Some(nonce) = self.nonces.as_ref().and_then(|n| n.foreign()) {
            metrics.chain_calls.with(&[name, "refused"]).inc();
            return Box::pin(std::future::ready(Err(SubmitError::ForeignSigner {
                nonce,
            })));
        }
        let nonces = self.nonces.clone();
        let pooled = self.inner.call(call);
        Box::pin(async move {
            let pooled = match pooled.await {
                Ok(p) => p,
                Err(e) => {
                    metrics.chain_calls.with(&[name, "refused"]).inc();
                    return Err(e);
                }
            };
            if let (Some(nonces), Some(nonce)) = (&nonces, pooled.nonce()) {
                nonces.signed(nonce);
            }
            let outstanding = Outstanding::new(metrics.chain_outstanding.with(&[]));
            Ok(pooled.map(move |result| {
                drop(outstanding);
                let outcome = match &result {
                    Ok(_) => "included",
                    Err(SubmitError::Dispatch { .. }) => "failed",
                    Err(_) => "lost",
                };
                metrics.chain_calls.with(&[name, outcome]).inc();
                result
            }))
        })
    }
}
