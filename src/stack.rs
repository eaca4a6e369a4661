//! The composition root: the crate's layers put together with its parts —
//! the sidecar client, the chain submitter, the telemetry — into the stacks
//! the executor drives. Layers ([`crate::layer`]) know none of these parts;
//! this module is where they meet, and where the [`DefaultClassifier`] that
//! knows every part's errors lives.
//!
//! The standard stack ([`build_stack`]), outermost first:
//!
//! ```text
//! metrics → lifecycle (admission gate: max_concurrent + prestart tasks)
//!   lifecycle ─ execute stack: concurrency limit → in-flight gauge → preempt
//!             │                → timeout → retry → sidecar client
//!             └ submit stack:  retry → status guard → chain submitter
//! ```
//!
//! The concurrency limit, the in-flight gauge and preemption wrap the
//! execute stack only: a sidecar slot is held while a model runs, never while
//! the chain is waited for, and a preemption cancels a model run, never a
//! submission. The submit stack's backpressure is the submitter's own bound
//! on transactions in flight.
//!
//! A node builder adds layers of their own around the execute and submit
//! stacks with [`NodeBuilder`](crate::node::NodeBuilder) (`Node::builder`,
//! `examples/custom_stack.rs`), or builds another shape from the same layers.

use tower::Layer;
use tower::layer::util::Identity;
use tower::limit::ConcurrencyLimit;
use tower::retry::Retry;
use tower::{BoxError, ServiceBuilder};

use crate::board::TaskOutcome;
use crate::chain::{ChainError, InvalidTransaction, SubmitError};
use crate::executor::ExecutorConfig;
use crate::handles::Handles;
use crate::layer::in_flight::InFlight;
use crate::layer::metrics::{ClassifyOutcome, Metrics};
use crate::layer::preempt::{Preempt, Preempted};
use crate::layer::retry::{Classify, ErrorClass, RetryPolicy};
use crate::layer::timeout::{Elapsed, Timeout};
use crate::layer::{Canceller, Lane1ServiceBuilderExt, cause};
use crate::lifecycle::{Lifecycle, LifecycleParts};
use crate::sidecar::client::SidecarError;
use crate::submitter::{SentCalls, StatusGuard, SubmissionError};
use crate::task::AccountId;
use crate::telemetry::metrics::{Lane1Metrics, SidecarActivity};

/// The crate's classifier. It looks down the error's source chain for the
/// first error it knows:
///
/// - [`SidecarError`]: its own [`class`](SidecarError::class) (sidecar
///   unavailable, overloaded, aborted, connection broken, our deadline →
///   retryable; model failures and everything else → permanent);
/// - [`SubmitError`]: connection failures, drops, a full pool and nonce races
///   (`Stale`, `PriorityTooLow`) are retryable; dispatch errors (the chain
///   ran the call and said no) and bad calls are permanent;
/// - [`SubmissionError`]: its chain error as above, a lost connection while
///   reading the task's status is retryable, the rest permanent;
/// - [`Elapsed`](crate::layer::timeout::Elapsed) and [`Preempted`](crate::layer::preempt::Preempted): permanent (the task's time or turn is over).
///
/// Anything unknown is permanent: a retry must be earned.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl DefaultClassifier {
    fn classify_dyn(&self, error: &(dyn std::error::Error + 'static)) -> ErrorClass {
        if let Some(e) = cause::<SidecarError>(error) {
            e.class()
        } else if let Some(e) = cause::<SubmitError>(error) {
            classify_submit(e)
        } else if let Some(e) = cause::<SubmissionError>(error) {
            match e {
                SubmissionError::Chain(e) => classify_submit(e),
                SubmissionError::Read(ChainError::Connection(_)) => ErrorClass::Retryable,
                _ => ErrorClass::Permanent,
            }
        } else {
            // Elapsed and Preempted (the task's time or turn is over), and
            // anything unknown: a retry must be earned.
            ErrorClass::Permanent
        }
    }
}

impl Classify<BoxError> for DefaultClassifier {
    fn classify(&self, error: &BoxError) -> ErrorClass {
        self.classify_dyn(error.as_ref())
    }
}

impl Classify<SidecarError> for DefaultClassifier {
    fn classify(&self, error: &SidecarError) -> ErrorClass {
        error.class()
    }
}

impl Classify<SubmitError> for DefaultClassifier {
    fn classify(&self, error: &SubmitError) -> ErrorClass {
        classify_submit(error)
    }
}

/// The `outcome` label of a task through the standard stack
/// (`lane1_tasks_total`): the lifecycle's outcome (`submitted`, `failed`,
/// `already_resolved`, `not_ours`, `unresolved`), or for an error
/// `preempted`, `timed_out` or `error`.
impl ClassifyOutcome<TaskOutcome, BoxError> for DefaultClassifier {
    fn classify(&self, result: &Result<TaskOutcome, BoxError>) -> &'static str {
        match result {
            Ok(outcome) => outcome.label(),
            Err(e) if cause::<Preempted>(e.as_ref()).is_some() => "preempted",
            Err(e) if cause::<Elapsed>(e.as_ref()).is_some() => "timed_out",
            Err(_) => "error",
        }
    }
}

/// The class of a chain submission error.
pub fn classify_submit(e: &SubmitError) -> ErrorClass {
    match e {
        SubmitError::Connection(_) | SubmitError::Dropped { .. } => ErrorClass::Retryable,
        SubmitError::Invalid {
            reason:
                InvalidTransaction::Stale { .. }
                | InvalidTransaction::PriorityTooLow { .. }
                | InvalidTransaction::PoolFull,
            ..
        } => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    }
}

/// The execute stack: concurrency limit → in-flight gauge → preempt →
/// timeout → retry → `X` (the sidecar client).
pub type ExecuteStack<X> = ConcurrencyLimit<
    InFlight<Preempt<Timeout<Retry<RetryPolicy<DefaultClassifier>, X>>>, SidecarActivity>,
>;

/// The submit stack: retry → status guard → `C` (a chain submitter).
pub type SubmitStack<C, P> = Retry<RetryPolicy<DefaultClassifier>, StatusGuard<C, P>>;

/// The standard stack: metrics → lifecycle over the execute and submit
/// stacks.
pub type Lane1Stack<X, C, P> =
    Metrics<Lifecycle<ExecuteStack<X>, SubmitStack<C, P>, P>, Lane1Metrics, DefaultClassifier>;

/// The parts a stack is built from.
#[derive(Clone, Debug)]
pub struct StackParts<X, C, P> {
    /// The sidecar's execute service.
    pub execute: X,
    /// Cancels tasks on the sidecar.
    pub canceller: Canceller,
    /// The chain submitter for our account.
    pub submit: C,
    /// Chain reads.
    pub port: P,
    /// Our account.
    pub account: AccountId,
    /// What the node's parts share (board, preemptor, metrics, record of
    /// sent calls, admission, run attempts).
    pub handles: Handles,
}

/// The submit stack on its own (the executor's, for claims and for failing
/// tasks it cannot run), sharing the record `sent` with the others.
pub fn submit_stack<C, P>(
    config: &ExecutorConfig,
    submit: C,
    port: P,
    account: AccountId,
    sent: SentCalls,
) -> SubmitStack<C, P> {
    ServiceBuilder::new()
        .retry(RetryPolicy::new(
            config.submit_retry_attempts,
            config.retry_base,
            config.retry_max,
            DefaultClassifier,
        ))
        .service(StatusGuard::with_record(submit, port, account, sent))
}

/// Builds the standard stack (see the [module docs](self)).
pub fn build_stack<X, C, P>(
    config: &ExecutorConfig,
    parts: StackParts<X, C, P>,
) -> Lane1Stack<X, C, P>
where
    X: Clone,
    P: Clone,
{
    build_stack_with(config, parts, &Identity::new(), &Identity::new())
}

/// The standard stack with a node builder's layers: `execute_layer` wraps
/// the execute stack (outside its concurrency limit: it sees every run the
/// lifecycle asks for), `submit_layer` each submit stack (outside its
/// retry). With [`Identity`] for both it is [`build_stack`].
pub fn build_stack_with<X, C, P, LE, LS>(
    config: &ExecutorConfig,
    parts: StackParts<X, C, P>,
    execute_layer: &LE,
    submit_layer: &LS,
) -> Metrics<Lifecycle<LE::Service, LS::Service, P>, Lane1Metrics, DefaultClassifier>
where
    X: Clone,
    P: Clone,
    LE: Layer<ExecuteStack<X>>,
    LS: Layer<SubmitStack<C, P>>,
{
    let execute = ServiceBuilder::new()
        .concurrency_limit(config.max_concurrent.max(1))
        .in_flight(SidecarActivity::new(&parts.handles.metrics))
        .preempt(parts.handles.preemptor.clone(), parts.canceller.clone())
        .task_timeout(config.execution_timeout, parts.canceller)
        .retry(RetryPolicy::new(
            config.retry_attempts,
            config.retry_base,
            config.retry_max,
            DefaultClassifier,
        ))
        .service(parts.execute);
    let execute = execute_layer.layer(execute);
    let submit = submit_layer.layer(submit_stack(
        config,
        parts.submit,
        parts.port.clone(),
        parts.account,
        parts.handles.sent.clone(),
    ));
    let metrics = parts.handles.metrics.clone();
    let lifecycle = Lifecycle::new(
        execute,
        submit,
        LifecycleParts {
            port: parts.port,
            account: parts.account,
            admit: config.admitted(),
            parameters: config.model_parameters.clone(),
            handles: parts.handles,
        },
    );
    ServiceBuilder::new()
        .lane1_metrics(metrics, DefaultClassifier)
        .service(lifecycle)
}
