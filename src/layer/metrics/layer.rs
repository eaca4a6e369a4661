//! The metrics layer.

use tower::Layer;

use super::Metrics;
use crate::telemetry::metrics::Lane1Metrics;

/// Applies [`Metrics`] to a service.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Lane1Metrics,
}

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Lane1Metrics) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner, self.metrics.clone())
    }
}
