//! Preemptible tasks: each call races the inner future against a per-task
//! cancel signal. A [`Preemptor`] — held by the node's Lane 0 side, the
//! listener or the executor — fires the signal for one task, a lane, or
//! everything. On preemption the inner future is dropped (releasing what it
//! holds), the sidecar task is cancelled and its confirmation awaited, and the
//! call fails with [`error::Preempted`].
//!
//! ```
//! use nsn_lane1::layer::Canceller;
//! use nsn_lane1::layer::preempt::{PreemptLayer, PreemptReason, Preemptor};
//! use nsn_lane1::task::Lane;
//!
//! let preemptor = Preemptor::new();
//! let layer = PreemptLayer::new(preemptor.clone(), Canceller::none());
//! // Later, when Lane 0 work arrives:
//! let stopped = preemptor.preempt_lane(Lane::Lane1, PreemptReason::Lane0);
//! assert!(stopped.is_empty()); // nothing was running
//! # let _ = layer;
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio_util::sync::CancellationToken;
use tower::{BoxError, Service};

use crate::layer::{Canceller, TaskRequest};
use crate::task::{Lane, TaskId};

pub mod error;
pub mod future;
mod layer;

pub use error::{PreemptReason, Preempted};
pub use future::ResponseFuture;
pub use layer::PreemptLayer;

#[derive(Debug)]
struct Entry {
    lane: Lane,
    token: CancellationToken,
    reason: Option<PreemptReason>,
    /// Tells registrations of the same id apart (a task re-run after a requeue).
    generation: u64,
}

/// Which running tasks Lane 0 work takes the sidecar from.
#[derive(Clone)]
struct Lane0Scope(Arc<dyn Fn(TaskId) -> bool + Send + Sync>);

impl std::fmt::Debug for Lane0Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lane0Scope")
    }
}

#[derive(Debug, Default)]
struct Registry {
    tasks: HashMap<TaskId, Entry>,
    /// `None`: Lane 0 work preempts every Lane 1 run.
    lane0_scope: Option<Lane0Scope>,
    next_generation: u64,
    /// Lanes whose calls are preempted as soon as they are made.
    held: HashSet<Lane>,
    /// Tasks whose next call is preempted as soon as it is made.
    forbidden: HashMap<TaskId, PreemptReason>,
}

/// Fires the cancel signals of running tasks. Cheap to clone; clones share
/// the same set of tasks.
#[derive(Clone, Debug, Default)]
pub struct Preemptor {
    registry: Arc<Mutex<Registry>>,
}

impl Preemptor {
    /// A preemptor with no tasks.
    pub fn new() -> Self {
        Preemptor::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Critical sections leave the map whole.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Preempts one task; false if it is not running in the stack.
    pub fn preempt(&self, id: TaskId, reason: PreemptReason) -> bool {
        let mut reg = self.lock();
        match reg.tasks.get_mut(&id) {
            Some(e) => {
                e.reason.get_or_insert(reason);
                e.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Preempts every running task of a lane; returns their ids.
    pub fn preempt_lane(&self, lane: Lane, reason: PreemptReason) -> Vec<TaskId> {
        self.preempt_where(|_, e| e.lane == lane, reason)
    }

    /// Narrows what Lane 0 work preempts to the Lane 1 runs `scope` says
    /// are on a sidecar that serves Lane 0 (a node whose other sidecars
    /// keep their Lane 1 runs). Default: every Lane 1 run.
    pub fn scope_lane0(&self, scope: impl Fn(TaskId) -> bool + Send + Sync + 'static) {
        self.lock().lane0_scope = Some(Lane0Scope(Arc::new(scope)));
    }

    /// Preempts the Lane 1 runs Lane 0 work needs the sidecar of (all, or
    /// those in [`scope_lane0`](Self::scope_lane0)); returns their ids.
    pub fn preempt_for_lane0(&self) -> Vec<TaskId> {
        let scope = self.lock().lane0_scope.clone();
        let on_lane0_sidecars: Vec<TaskId> = match &scope {
            None => return self.preempt_lane(Lane::Lane1, PreemptReason::Lane0),
            Some(scope) => self
                .running()
                .into_iter()
                .filter(|id| (scope.0)(*id))
                .collect(),
        };
        self.preempt_where(
            |id, e| e.lane == Lane::Lane1 && on_lane0_sidecars.contains(&id),
            PreemptReason::Lane0,
        )
    }

    /// Preempts every running task; returns their ids.
    pub fn preempt_all(&self, reason: PreemptReason) -> Vec<TaskId> {
        self.preempt_where(|_, _| true, reason)
    }

    fn preempt_where(
        &self,
        pred: impl Fn(TaskId, &Entry) -> bool,
        reason: PreemptReason,
    ) -> Vec<TaskId> {
        let mut reg = self.lock();
        let mut ids = Vec::new();
        for (id, e) in reg.tasks.iter_mut().filter(|(id, e)| pred(**id, e)) {
            e.reason.get_or_insert(reason);
            e.token.cancel();
            ids.push(*id);
        }
        ids.sort();
        ids
    }

    /// Holds a lane: its running calls should be preempted (see
    /// [`preempt_lane`](Self::preempt_lane)), and every call of it made
    /// until [`release`](Self::release) is preempted at once, with
    /// [`PreemptReason::Lane0`]. (A task that waited for a sidecar slot while
    /// Lane 0 work arrived does not start then.)
    pub fn hold(&self, lane: Lane) {
        self.lock().held.insert(lane);
    }

    /// Lets calls of a held lane run again.
    pub fn release(&self, lane: Lane) {
        self.lock().held.remove(&lane);
    }

    /// True while `lane` is held.
    pub fn is_held(&self, lane: Lane) -> bool {
        self.lock().held.contains(&lane)
    }

    /// Preempts a task now if it is running, or else its next call as soon
    /// as it is made (for a task on its way to the sidecar that must not get
    /// there: the chain ended it). Undone by [`allow`](Self::allow).
    pub fn forbid(&self, id: TaskId, reason: PreemptReason) {
        if !self.preempt(id, reason) {
            self.lock().forbidden.insert(id, reason);
        }
    }

    /// Forgets a [`forbid`](Self::forbid) mark.
    pub fn allow(&self, id: TaskId) {
        self.lock().forbidden.remove(&id);
    }

    /// Tasks currently running in the stack.
    pub fn running(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self.lock().tasks.keys().copied().collect();
        ids.sort();
        ids
    }

    fn register(&self, task_id: TaskId, lane: Lane) -> Registration {
        let token = CancellationToken::new();
        let mut reg = self.lock();
        let generation = reg.next_generation;
        reg.next_generation += 1;
        let reason = reg
            .forbidden
            .remove(&task_id)
            .or_else(|| reg.held.contains(&lane).then_some(PreemptReason::Lane0));
        if reason.is_some() {
            token.cancel();
        }
        reg.tasks.insert(
            task_id,
            Entry {
                lane,
                token: token.clone(),
                reason,
                generation,
            },
        );
        Registration {
            preemptor: self.clone(),
            task_id,
            token,
            generation,
        }
    }
}

/// A task's place in the preemptor; removed when the call ends or is dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    preemptor: Preemptor,
    task_id: TaskId,
    token: CancellationToken,
    generation: u64,
}

impl Registration {
    fn reason(&self) -> PreemptReason {
        self.preemptor
            .lock()
            .tasks
            .get(&self.task_id)
            .and_then(|e| e.reason)
            .unwrap_or(PreemptReason::Requested)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = self.preemptor.lock();
        if reg
            .tasks
            .get(&self.task_id)
            .is_some_and(|e| e.generation == self.generation)
        {
            reg.tasks.remove(&self.task_id);
        }
    }
}

/// Makes calls preemptible; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Preempt<S> {
    inner: S,
    preemptor: Preemptor,
    canceller: Canceller,
}

impl<S> Preempt<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, preemptor: Preemptor, canceller: Canceller) -> Self {
        Preempt {
            inner,
            preemptor,
            canceller,
        }
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

impl<S, R> Service<R> for Preempt<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    R: TaskRequest,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let registration = self.preemptor.register(req.task_id(), req.lane());
        if registration.token.is_cancelled() {
            // Its lane is held: the call is not made at all.
            return ResponseFuture::refused(registration);
        }
        let run_id = req.run_id();
        ResponseFuture::new(
            self.inner.call(req),
            registration,
            run_id,
            self.canceller.clone(),
        )
    }
}
