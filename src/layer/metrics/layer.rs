//! The metrics layer.

use tower::Layer;

use super::Metrics;

/// Applies [`Metrics`] to a service.
#[derive(Clone, Debug)]
pub struct MetricsLayer<M, C> {
    sink: M,
    classify: C,
}

impl<M, C> MetricsLayer<M, C> {
    /// Records into `sink`, each outcome labelled by `classify`.
    pub fn new(sink: M, classify: C) -> Self {
        MetricsLayer { sink, classify }
    }
}

impl<S, M: Clone, C: Clone> Layer<S> for MetricsLayer<M, C> {
    type Service = Metrics<S, M, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::new(inner, self.sink.clone(), self.classify.clone())
    }
}
