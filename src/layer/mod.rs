//! The crate's Tower layers, one folder each in tower's layout
//! (`mod.rs` service, `layer.rs`, `future.rs`, `error.rs`):
//!
//! - [`timeout`]: bounds a task's execution; on expiry cancels the sidecar task;
//! - [`retry`]: a `tower::retry::Policy` driven by an error classifier, with
//!   exponential backoff, jitter and a retry budget;
//! - [`preempt`]: races a task against its cancel signal ([`preempt::Preemptor`]);
//!   on preemption cancels the sidecar task and waits for the confirmation;
//! - [`metrics`]: counts and times every task by outcome, lane and model, with a
//!   drop guard so preempted and timed-out tasks are counted too;
//! - [`in_flight`]: a gauge of the tasks inside the stack.
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
//!     .lane1_metrics(metrics.clone())
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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tower::BoxError;

use crate::sidecar::client::{ExecuteRequest, SidecarClient};
use crate::task::{Lane, ModelId, Task, TaskId};

pub mod in_flight;
pub mod metrics;
pub mod preempt;
pub mod retry;
pub mod timeout;

/// A request about one chain task.
pub trait TaskRequest {
    /// The task's id.
    fn task_id(&self) -> TaskId;
    /// Its lane.
    fn lane(&self) -> Lane;
    /// Its model.
    fn model(&self) -> &ModelId;
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

impl TaskRequest for ExecuteRequest {
    fn task_id(&self) -> TaskId {
        self.task_id
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
    /// Sets the limit (so that it travels to the sidecar).
    fn set_timeout(&mut self, limit: Duration);
}

impl TimeoutRequest for ExecuteRequest {
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    fn set_timeout(&mut self, limit: Duration) {
        self.timeout = Some(limit);
    }
}

/// A cancel in progress on the remote side: resolves once it is confirmed.
pub type CancelFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

type CancelFn = dyn Fn(TaskId, &'static str) -> CancelFuture + Send + Sync;

/// Stops a task on the sidecar and waits for the sidecar to confirm. Cheap to
/// clone.
#[derive(Clone)]
pub struct Canceller(Arc<CancelFn>);

impl fmt::Debug for Canceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Canceller")
    }
}

impl Canceller {
    /// Cancels through a sidecar client (`CancelTask`, then status until
    /// `cancelled`).
    pub fn sidecar(client: SidecarClient) -> Self {
        Canceller(Arc::new(move |id, reason| {
            let client = client.clone();
            Box::pin(async move {
                client
                    .cancel(id, reason)
                    .await
                    .map(|_| ())
                    .map_err(BoxError::from)
            })
        }))
    }

    /// A canceller for services with nothing remote to stop.
    pub fn none() -> Self {
        Canceller(Arc::new(|_, _| Box::pin(async { Ok(()) })))
    }

    /// A canceller from a function.
    pub fn from_fn<F, Fut>(f: F) -> Self
    where
        F: Fn(TaskId, &'static str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Canceller(Arc::new(move |id, reason| Box::pin(f(id, reason))))
    }

    /// Cancels `id` on the remote side.
    pub fn cancel(&self, id: TaskId, reason: &'static str) -> CancelFuture {
        (self.0)(id, reason)
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

    /// Counts and times tasks (see [`metrics`]).
    fn lane1_metrics(
        self,
        metrics: crate::telemetry::metrics::Lane1Metrics,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<metrics::MetricsLayer, L>>;

    /// Keeps a gauge of the tasks inside (see [`in_flight`]).
    fn in_flight(
        self,
        gauge: crate::telemetry::metrics::Gauge,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<in_flight::InFlightLayer, L>>;
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

    fn lane1_metrics(
        self,
        metrics: crate::telemetry::metrics::Lane1Metrics,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<metrics::MetricsLayer, L>> {
        self.layer(metrics::MetricsLayer::new(metrics))
    }

    fn in_flight(
        self,
        gauge: crate::telemetry::metrics::Gauge,
    ) -> tower::ServiceBuilder<tower::layer::util::Stack<in_flight::InFlightLayer, L>> {
        self.layer(in_flight::InFlightLayer::new(gauge))
    }
}
