//! The preempt layer.

use tower::Layer;

use super::{Preempt, Preemptor};
use crate::layer::Canceller;

/// Applies [`Preempt`] to a service.
#[derive(Clone, Debug)]
pub struct PreemptLayer {
    preemptor: Preemptor,
    canceller: Canceller,
}

impl PreemptLayer {
    /// Tasks can be preempted through `preemptor`; their sidecar tasks are
    /// stopped through `canceller`.
    pub fn new(preemptor: Preemptor, canceller: Canceller) -> Self {
        PreemptLayer {
            preemptor,
            canceller,
        }
    }
}

impl<S> Layer<S> for PreemptLayer {
    type Service = Preempt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Preempt::new(inner, self.preemptor.clone(), self.canceller.clone())
    }
}
