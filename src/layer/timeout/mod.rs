//! Bounds each task's execution.
//!
//! The limit is the layer's, or the request's own if that is shorter; it is
//! written into the request so the sidecar enforces it too (`timeout_ms`). A
//! failure that arrives once the limit has passed is reported as
//! [`error::Elapsed`] (the sidecar stopped the task and said so). If no answer
//! comes within the limit plus a grace period, the inner call is dropped, the
//! sidecar task is cancelled (and its confirmation awaited), and the call
//! fails with `Elapsed`. The inner future is polled before the timer, so an
//! answer that is ready is never thrown away.
//!
//! ```
//! use std::time::Duration;
//! use nsn_lane1::layer::Canceller;
//! use nsn_lane1::layer::timeout::TimeoutLayer;
//! use tower::ServiceBuilder;
//! # use tower::service_fn;
//! # use nsn_lane1::sidecar::client::ExecuteRequest;
//!
//! let stack = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(300), Canceller::none()))
//!     .service(service_fn(|r: ExecuteRequest| async move { Ok::<_, tower::BoxError>(r.task_id) }));
//! # let _ = stack;
//! ```

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{BoxError, Service};

use crate::layer::{Canceller, TimeoutRequest};

pub mod error;
pub mod future;
mod layer;

pub use error::Elapsed;
pub use future::ResponseFuture;
pub use layer::TimeoutLayer;

/// Bounds each call by a time limit; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
    grace: Duration,
    canceller: Canceller,
}

/// How long past the limit the layer waits for the sidecar's own answer
/// before it stops waiting and cancels.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: Duration, canceller: Canceller) -> Self {
        Timeout {
            inner,
            limit,
            grace: DEFAULT_GRACE,
            canceller,
        }
    }

    /// Sets how long past the limit to wait for the sidecar's own answer.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: TimeoutRequest,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: R) -> Self::Future {
        let limit = req.timeout().map_or(self.limit, |own| own.min(self.limit));
        req.set_timeout(limit);
        let run_id = req.run_id();
        let backstop = limit.saturating_add(self.grace);
        ResponseFuture::new(
            self.inner.call(req),
            limit,
            backstop,
            run_id,
            self.canceller.clone(),
        )
    }
}
