//! The crate's errors at its public edge, one enum per concern, and
//! [`Lane1Error`] over all of them.
//!
//! - [`ListenerError`]: following the chain;
//! - [`SidecarError`]: running a task on the sidecar;
//! - [`SubmissionError`]: putting a call on chain;
//! - [`Lane1Error`]: anything that stops the node.

pub use crate::listener::ListenerError;
pub use crate::sidecar::client::SidecarError;
pub use crate::submitter::SubmissionError;

/// Anything that stops a Lane 1 node, with its cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Lane1Error {
    /// Following the chain failed.
    #[error(transparent)]
    Listener(#[from] ListenerError),
    /// A sidecar call failed.
    #[error(transparent)]
    Execution(#[from] SidecarError),
    /// A chain submission failed.
    #[error(transparent)]
    Submission(#[from] SubmissionError),
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The sidecar client could not be built.
    #[error(transparent)]
    Sidecar(#[from] crate::sidecar::client::SidecarConfigError),
    /// The executor failed.
    #[error(transparent)]
    Executor(#[from] crate::executor::ExecutorError),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    /// A chain read failed.
    #[error(transparent)]
    Chain(#[from] crate::chain::ChainError),
}

impl Lane1Error {
    /// Recovers the typed error from a boxed one out of a service stack.
    pub fn from_box(e: tower::BoxError) -> Self {
        let e = match e.downcast::<SidecarError>() {
            Ok(e) => return Lane1Error::Execution(*e),
            Err(e) => e,
        };
        Lane1Error::Submission(SubmissionError::from_box(e))
    }
}
