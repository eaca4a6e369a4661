//! The timeout's layer.

use std::time::Duration;

use tower::Layer;

use super::Timeout;
use crate::layer::Canceller;

/// Applies [`Timeout`] to a service.
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    limit: Duration,
    canceller: Canceller,
}

impl TimeoutLayer {
    /// Tasks get at most `limit` (or their own, shorter, limit); a task that
    /// runs over is cancelled through `canceller`.
    pub fn new(limit: Duration, canceller: Canceller) -> Self {
        TimeoutLayer { limit, canceller }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.limit, self.canceller.clone())
    }
}
