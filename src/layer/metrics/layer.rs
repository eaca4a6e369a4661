//! The metrics layer.

use tower::Layer;

use super::Metrics;

/// Applies [`Metrics`] to a service.
#[derive(Clone, Debug)]
pub struct MetricsLayer<M> {
    sink: M,
}

impl<M> MetricsLayer<M> {
    /// Records into `sink`.
    pub fn new(sink: M) -> Self {
        MetricsLayer { sink }
    }
}

impl<S, M: Clone> Layer<S> for MetricsLayer<M> {
    type Service = Metrics<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner, self.sink.clone())
    }
}
