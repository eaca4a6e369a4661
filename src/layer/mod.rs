//! The crate's Tower layers, one folder each in tower's layout
//! (`mod.rs` service, `layer.rs`, `future.rs`, `error.rs`):
//!
//! - [`timeout`]: bounds a task's execution; on expiry cancels the sidecar task;
//! - [`retry`]: a `tower::retry::Policy` driven by an error classifier, with
//!   tower's exponential backoff with jitter, and a retry budget;
//! - [`preempt`]: races a task against its cancel signal ([`preempt::Preemptor`]);
//!   on preemption cancels the sidecar task and waits for the confirmation;
//! - [`metrics`]: counts and times every task by outcome, lane and model, with a
//!   drop guard so preempted and timed-out tasks are counted too;
//! - [`in_flight`]: a gauge of the tasks inside the stack.
//!
//! The layers know nothing of the chain, the sidecar or the telemetry: each
//! is generic over a small trait — a request that names its task
//! ([`TaskRequest`]), something that stops a task remotely ([`Canceller`]), a
//! metrics sink ([`metrics::RecordTask`], [`in_flight::InFlightCount`]).
//! The composition root (the `stack` module) puts them together with the
//! crate's own parts.
//!
//! [`Lane1ServiceBuilderExt`] adds them to `tower::ServiceBuilder`:
//!
//! ```
//! use std::time::Duration;
//! use nsn_lane1::layer::{Canceller, Lane1ServiceBuilderExt};
//! use nsn_lane1::layer::preempt::Preemptor;
//! use nsn_lane1::telemetry::metrics::Lane1Metrics;
//! use nsn_lane1::task::{Cid, Lane, ModelId, Task, TaskId, AccountId};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let metrics = Lane1Metrics::default();
//! let stack = ServiceBuilder::new()
//!     .lane1_metrics(metrics.clone(), |r: &Result<TaskId, tower::BoxError>| {
//!         if r.is_ok() { "ok" } else { "error" }
//!     })
//!     .concurrency_limit(8)
//!     .preempt(Preemptor::new(), Canceller::none())
//!     .service(service_fn(|task: Task| async move { Ok::<_, tower::BoxError>(task.id) }));
//! let task = Task {
//!     id: TaskId(1), lane: Lane::Lane1, priority: nsn_lane1::task::Priority::Normal,
//!     model: ModelId::new("noop").unwrap(),
//!     input_cid: Cid::parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").unwrap(),
//!     deadline: 10, compute_budget: 0, escrow: 0, requester: AccountId::ALICE,
//! };
//! assert_eq!(stack.oneshot(task).await.unwrap(), TaskId(1));
//! assert!(metrics.registry.render().contains("outcome=\"ok\""));
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tower::BoxError;

use crate::task::{Lane, ModelId, RunId, Task, TaskId};

pub(crate) mod cancel;
pub mod in_flight;
pub mod metrics;
pub mod preempt;
pub mod retry;
pub mod timeout;

/// The first error of type `E` in an error's source chain (the error itself
/// first). Layers and classifiers decide by the types they find there, never
/// by an error's message.
pub fn cause<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// A request about one chain task.
pub trait TaskRequest {
    /// The task's id.
    fn task_id(&self) -> TaskId;
    /// Its lane.
    fn lane(&self) -> Lane;
    /// Its model.
    fn model(&self) -> &ModelId;
    /// The run attempt it is (the first, unless the request says otherwise):
    /// what a [`Canceller`] stops.
    fn run_id(&self) -> RunId {
        RunId::first(self.task_id())
    }
}

impl TaskRequest for Task {
    fn task_id(&self) -> TaskId {
        self.id
    }
    fn lane(&self) -> Lane {
        self.lane
    }
    fn model(&self) -> &ModelId {
        &self.model
    }
}

/// A request that carries its own time limit.
pub trait TimeoutRequest: TaskRequest {
    /// The request's limit, if it has one.
    fn timeout(&self) -> Option<Duration>;
    /// Sets the limit (so that it travels to the remote side).
    fn set_timeout(&mut self, limit: Duration);
}

/// A cancel in progress on the remote side: resolves once it is confirmed.
pub type CancelFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

type CancelFn = dyn Fn(RunId, &'static str) -> CancelFuture + Send + Sync;
type AnswerFn = dyn Fn(&(dyn Error + 'static)) -> bool + Send + Sync;

/// Stops a task where it runs (the sidecar) and waits for the confirmation.
/// Cheap to clone. The sidecar client makes one (`SidecarClient::canceller`).
///
/// The layers that cancel a call keep waiting for it while the cancel runs:
/// an error it answers with is the first proof
/// that it stopped, when [`is_stop_answer`](Self::is_stop_answer) says it
/// is the remote side's answer rather than a broken connection.
#[derive(Clone)]
pub struct Canceller {
    cancel: Arc<CancelFn>,
    answer: Option<Arc<AnswerFn>>,
}

impl fmt::Debug for Canceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Canceller")
    }
}

impl Canceller {
    /// A canceller for services with nothing remote to stop.
    pub fn none() -> Self {
        Canceller::from_fn(|_, _| async { Ok(()) })
    }

    /// A canceller from a function.
    pub fn from_fn<F, Fut>(f: F) -> Self
    where
        F: Fn(RunId, &'static str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Canceller {
            cancel: Arc::new(move |id, reason| Box::pin(f(id, reason))),
            answer: None,
        }
    }

    /// Says which errors of the cancelled call are the remote side's
    /// answer (the run ended) — the rest (a broken connection, no answer)
    /// leave the confirmation to the cancel itself. Without it, every error
    /// is an answer.
    pub fn with_stop_answers(
        mut self,
        answer: impl Fn(&(dyn Error + 'static)) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.answer = Some(Arc::new(answer));
        self
    }

    /// Cancels the run `id` on the remote side.
    pub fn cancel(&self, id: RunId, reason: &'static str) -> CancelFuture {
        (self.cancel)(id, reason)
    }

    /// Whether `error`, the cancelled call's answer, shows that it stopped.
    pub fn is_stop_answer(&self, error: &(dyn Error + 'static)) -> bool {
        self.answer.as_ref().is_none_or(|answer| answer(error))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds the crate's layers to a `tower::ServiceBuilder`.
pub trait Lane1ServiceBuilderExt<L>: sealed::Sealed {
    /// Bounds each task's execution (see [`timeout`]).
    fn task_timeout(
        self,
        limit: Duration,
        canceller: Canceller,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<timeout::TimeoutLayer, L>>;

    /// Makes tasks preemptible (see [`preempt`]).
    fn preempt(
        self,
        preemptor: preempt::Preemptor,
        canceller: Canceller,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<preempt::PreemptLayer, L>>;

    /// Counts and times tasks into `sink`, each outcome labelled by
    /// `classify` (see [`metrics`]).
    fn lane1_metrics<M: metrics::RecordTask, C: Clone>(
        self,
        sink: M,
        classify: C,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<metrics::MetricsLayer<M, C>, L>>;

    /// Keeps a count of the tasks inside (see [`in_flight`]).
    fn in_flight<G: in_flight::InFlightCount>(
        self,
        gauge: G,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<in_flight::InFlightLayer<G>, L>>;
}

impl<L> Lane1ServiceBuilderExt<L> for tower::ServiceBuilder<L> {
    fn task_timeout(
        self,
        limit: Duration,
        canceller: Canceller,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<timeout::TimeoutLayer, L>> {
        self.layer(timeout::TimeoutLayer::new(limit, canceller))
    }

    fn preempt(
        self,
        preemptor: preempt::Preemptor,
        canceller: Canceller,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<preempt::PreemptLayer, L>> {
        self.layer(preempt::PreemptLayer::new(preemptor, canceller))
    }

    fn lane1_metrics<M: metrics::RecordTask, C: Clone>(
        self,
        sink: M,
        classify: C,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<metrics::MetricsLayer<M, C>, L>> {
        self.layer(metrics::MetricsLayer::new(sink, classify))
    }

    fn in_flight<G: in_flight::InFlightCount>(
        self,
        gauge: G,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<in_flight::InFlightLayer<G>, L>> {
        self.layer(in_flight::InFlightLayer::new(gauge))
    }
}
