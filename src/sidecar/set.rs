//! Several sidecars behind one node: each run placed where its model is
//! served and, better, already loaded; among those, by power of two choices
//! on the load (runs in flight ÷ capacity).
//!
//! A [`SidecarSet`] is the node's one view of its sidecars. Its
//! [`execute`](SidecarSet::execute) service places each run:
//!
//! 1. only on a sidecar that is up and serves the run's model (a sidecar
//!    whose capabilities are not known yet is taken to serve everything);
//! 2. first on one that has the model loaded and a free slot, then one with
//!    a free slot, then one that has it loaded, then any;
//! 3. among equals, the less loaded of two picked at random (tower's
//!    [`Load`] measure, the rule of `tower::balance::p2c`, applied to the
//!    sidecars that may take this model — p2c's `Balance` itself chooses
//!    among all endpoints, blind to what a request needs).
//!
//! A sidecar whose call fails without a word about the run (no connection,
//! no answer) leaves the set at once; the health watch
//! ([`SidecarSet::check`]) brings it back when its `HealthCheck` passes.
//! With none up, a run fails with `UNAVAILABLE` and its task is held, as
//! when the one sidecar of a node is down. A task's own failure never takes
//! a sidecar out. Each run's sidecar is remembered until it ends, so its
//! cancel goes where it runs.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use tokio::sync::watch;
use tower::ServiceExt;
use tower::load::Load;

use super::client::{
    Capabilities, ExecuteRequest, ExecutionResult, ModelCapability, SidecarClient, SidecarError,
};
use crate::layer::Canceller;
use crate::task::{Lane, ModelId, RunId};

/// One sidecar of a set.
#[derive(Debug)]
pub struct Member {
    client: SidecarClient,
    capacity: usize,
    in_flight: AtomicUsize,
    up: AtomicBool,
    /// The models it serves and their capabilities (`None`: not known yet).
    serves: RwLock<Option<std::collections::BTreeMap<ModelId, ModelCapability>>>,
    /// The models it has loaded, as it last said or as its runs showed.
    loaded: RwLock<HashSet<ModelId>>,
    runs: AtomicU64,
    cold_runs: AtomicU64,
    /// Since when it has had a run of ours (while it has one).
    busy_since: Mutex<Option<std::time::Instant>>,
    /// Runs of ours on it that load their model first (cold runs in flight).
    loading: AtomicUsize,
    /// It serves Lane 0: Lane 0 work takes it from Lane 1 runs.
    lane0: AtomicBool,
}

impl Member {
    /// Its client.
    pub fn client(&self) -> &SidecarClient {
        &self.client
    }

    /// Its endpoint, as configured.
    pub fn endpoint(&self) -> &str {
        &self.client.config().endpoint
    }

    /// Runs it takes at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs it has now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it is in the set (up).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Runs placed on it since start.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Runs placed on it for a model it did not have loaded.
    pub fn cold_runs(&self) -> u64 {
        self.cold_runs.load(Ordering::Relaxed)
    }

    /// Whether it serves Lane 0 (Lane 0 work preempts the Lane 1 runs on it).
    pub fn serves_lane0(&self) -> bool {
        self.lane0.load(Ordering::Relaxed)
    }

    /// Whether it serves `model` (`None`: it has not said yet).
    pub fn serves(&self, model: &ModelId) -> Option<bool> {
        read(&self.serves).as_ref().map(|s| s.contains_key(model))
    }

    /// Whether it has `model` loaded.
    pub fn has_loaded(&self, model: &ModelId) -> bool {
        read(&self.loaded).contains(model)
    }

    fn learn(&self, caps: Capabilities) {
        *write(&self.loaded) = caps
            .models
            .iter()
            .filter(|(_, c)| matches!(c.loaded.as_deref(), Some("hot" | "warm")))
            .map(|(m, _)| m.clone())
            .collect();
        *write(&self.serves) = Some(caps.models);
    }

    fn free(&self) -> bool {
        self.in_flight() < self.capacity
    }
}

/// Load as runs in flight per slot, in thousandths.
impl Load for Member {
    type Metric = usize;

    fn load(&self) -> usize {
        self.in_flight().saturating_mul(1000) / self.capacity.max(1)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug)]
struct Inner {
    members: Vec<Member>,
    /// The sidecar each running run is on.
    placed: Mutex<HashMap<RunId, usize>>,
    /// Whether any sidecar is up; changes as members leave and rejoin.
    any_up: watch::Sender<bool>,
    seed: AtomicU64,
    metrics: std::sync::OnceLock<crate::telemetry::metrics::Lane1Metrics>,
    /// Places by load alone (the baseline the scale bench measures against).
    blind: AtomicBool,
}

/// The node's sidecars; see the [module docs](self). Clones share one set.
#[derive(Clone, Debug)]
pub struct SidecarSet {
    inner: Arc<Inner>,
}

impl From<SidecarClient> for SidecarSet {
    fn from(client: SidecarClient) -> Self {
        SidecarSet::new([(client, usize::MAX)])
    }
}

impl SidecarSet {
    /// A set of sidecars, each with the runs it takes at once. All start
    /// up; the health watch corrects that.
    pub fn new(sidecars: impl IntoIterator<Item = (SidecarClient, usize)>) -> Self {
        let members: Vec<Member> = sidecars
            .into_iter()
            .map(|(client, capacity)| Member {
                client,
                capacity: capacity.max(1),
                in_flight: AtomicUsize::new(0),
                up: AtomicBool::new(true),
                serves: RwLock::new(None),
                loaded: RwLock::new(HashSet::new()),
                runs: AtomicU64::new(0),
                cold_runs: AtomicU64::new(0),
                busy_since: Mutex::new(None),
                loading: AtomicUsize::new(0),
                lane0: AtomicBool::new(true),
            })
            .collect();
        SidecarSet {
            inner: Arc::new(Inner {
                any_up: watch::channel(!members.is_empty()).0,
                members,
                placed: Mutex::new(HashMap::new()),
                seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
                metrics: std::sync::OnceLock::new(),
                blind: AtomicBool::new(false),
            }),
        }
    }

    /// Records each sidecar's runs, cold runs, failures, loaded models, runs
    /// in flight, busy seconds and membership into `metrics` (label
    /// `sidecar`, its endpoint). The first call wins.
    pub fn record_into(&self, metrics: crate::telemetry::metrics::Lane1Metrics) {
        for m in &self.inner.members {
            metrics
                .sidecar_up
                .with(&[m.endpoint()])
                .set(i64::from(m.is_up()));
            metrics.sidecar_runs.with(&[m.endpoint()]);
            metrics.sidecar_in_flight.with(&[m.endpoint()]);
        }
        let _ = self.inner.metrics.set(metrics);
    }

    fn metrics(&self) -> Option<&crate::telemetry::metrics::Lane1Metrics> {
        self.inner.metrics.get()
    }

    /// Places runs by load alone, blind to what each sidecar has loaded —
    /// as `tower::balance::p2c` would: the baseline `benches/scale.rs`
    /// measures model-aware placement against. Not for a node.
    pub fn model_blind(self) -> Self {
        self.inner.blind.store(true, Ordering::Relaxed);
        self
    }

    /// Says whether sidecar `index` serves Lane 0 (default: every sidecar
    /// does). Lane 0 work preempts only the Lane 1 runs on the sidecars that
    /// serve it; the others keep theirs.
    pub fn lane0_role(self, index: usize, serves_lane0: bool) -> Self {
        if let Some(m) = self.inner.members.get(index) {
            m.lane0.store(serves_lane0, Ordering::Relaxed);
        }
        self
    }

    /// Whether every sidecar serves Lane 0.
    pub fn all_serve_lane0(&self) -> bool {
        self.inner.members.iter().all(Member::serves_lane0)
    }

    /// Whether Lane 0 work needs the sidecar `task` runs on: true unless
    /// it runs on one that does not serve Lane 0 (or is not placed yet).
    pub fn on_lane0_sidecar(&self, task: crate::task::TaskId) -> bool {
        let placed = self
            .inner
            .placed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        placed
            .iter()
            .filter(|(run, _)| run.task == task)
            .all(|(_, i)| self.inner.members.get(*i).is_none_or(Member::serves_lane0))
    }

    /// The sidecars, in the order given.
    pub fn members(&self) -> &[Member] {
        &self.inner.members
    }

    /// The first sidecar's client (the one of a node with one sidecar).
    pub fn first(&self) -> Option<&SidecarClient> {
        self.inner.members.first().map(Member::client)
    }

    /// Whether any sidecar is up.
    pub fn any_up(&self) -> bool {
        *self.inner.any_up.borrow()
    }

    /// Changes of [`any_up`](Self::any_up).
    pub fn watch_up(&self) -> watch::Receiver<bool> {
        self.inner.any_up.subscribe()
    }

    /// How long the slowest sidecar may take to connect: what a caller
    /// waiting for the set's first answer gives it.
    pub fn connect_timeout(&self) -> std::time::Duration {
        self.inner
            .members
            .iter()
            .map(|m| m.client.config().connect_timeout)
            .max()
            .unwrap_or_default()
    }

    fn set_up(&self, index: usize, up: bool) {
        let Some(member) = self.inner.members.get(index) else {
            return;
        };
        if let Some(metrics) = self.metrics() {
            metrics
                .sidecar_up
                .with(&[member.endpoint()])
                .set(i64::from(up));
        }
        if member.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(sidecar = member.endpoint(), "sidecar back in the set");
            } else {
                tracing::warn!(sidecar = member.endpoint(), "sidecar left the set");
            }
        }
        let any = self.inner.members.iter().any(Member::is_up);
        self.inner.any_up.send_if_modified(|a| {
            let changed = *a != any;
            *a = any;
            changed
        });
    }

    /// Asks every sidecar for its health at once (and, when it is up, what
    /// it serves and has loaded): the ones that answer healthy are in the
    /// set, the others out. Returns whether any is up.
    pub async fn check(&self) -> bool {
        let checks = self.inner.members.iter().enumerate().map(|(i, m)| async move {
            let up = matches!(m.client.health().await, Ok(h) if h.healthy);
            if up {
                // What it serves and has loaded (a load may have evicted
                // another model since the last look).
                match m.client.capabilities().await {
                    Ok(caps) => {
                        m.learn(caps);
                        if let Some(metrics) = self.metrics() {
                            let loaded = read(&m.loaded).len();
                            metrics
                                .sidecar_loaded_models
                                .with(&[m.endpoint()])
                                .set(i64::try_from(loaded).unwrap_or(i64::MAX));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(sidecar = m.endpoint(), error = %e, "capabilities unavailable")
                    }
                }
            } else {
                // It may come back with other models: ask again then.
                *write(&m.serves) = None;
            }
            (i, up)
        });
        for (i, up) in futures::future::join_all(checks).await {
            self.set_up(i, up);
        }
        self.any_up()
    }

    /// The Lane 1 models the sidecars that are up serve, with the worst
    /// of their latencies (`None` while none has said).
    pub fn lane1_models(&self) -> Option<HashMap<ModelId, u32>> {
        let mut models: Option<HashMap<ModelId, u32>> = None;
        for m in self.inner.members.iter().filter(|m| m.is_up()) {
            if let Some(serves) = read(&m.serves).as_ref() {
                let all = models.get_or_insert_with(HashMap::new);
                for (model, caps) in serves
                    .iter()
                    .filter(|(_, c)| c.lanes.contains(&Lane::Lane1))
                {
                    let worst = all.entry(model.clone()).or_insert(0);
                    *worst = (*worst).max(caps.max_latency_ms);
                }
            }
        }
        models
    }

    /// Picks the sidecar for a run of `model`; see the [module docs](self).
    fn place(&self, model: &ModelId) -> Option<usize> {
        let members = &self.inner.members;
        let eligible: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].is_up() && members[i].serves(model) != Some(false))
            .collect();
        // A load costs far more than a run (10–60 s on GPUs): a warm
        // sidecar is worth a short wait, and a sidecar loads one model at a
        // time.
        let tiers: [&dyn Fn(&Member) -> bool; 4] = [
            &|m| m.free() && m.has_loaded(model),
            &|m| m.has_loaded(model) && m.in_flight() < 2 * m.capacity,
            &|m| m.free() && m.loading.load(Ordering::Relaxed) == 0,
            &|m| m.has_loaded(model),
        ];
        let pool = tiers
            .iter()
            .map(|tier| {
                eligible
                    .iter()
                    .copied()
                    .filter(|&i| tier(&members[i]))
                    .collect::<Vec<_>>()
            })
            .find(|pool| !pool.is_empty() && !self.inner.blind.load(Ordering::Relaxed))
            .unwrap_or(eligible);
        match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            n => {
                let (a, b) = self.two_of(n);
                let (a, b) = (pool[a], pool[b]);
                Some(if members[b].load() < members[a].load() {
                    b
                } else {
                    a
                })
            }
        }
    }

    /// Two distinct indices below `n` (n ≥ 2), from a xorshift stream.
    fn two_of(&self, n: usize) -> (usize, usize) {
        let mut x = self.inner.seed.load(Ordering::Relaxed);
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let a = (next() % n as u64) as usize;
        let b = (a + 1 + (next() % (n as u64 - 1)) as usize) % n;
        self.inner.seed.store(x, Ordering::Relaxed);
        (a, b)
    }

    /// The `ExecuteTask` service over the set (attaching to a run already
    /// going on its sidecar, as [`SidecarClient::execute_attaching`]).
    pub fn execute(&self) -> SetExecute {
        SetExecute { set: self.clone() }
    }

    /// A [`Canceller`] that cancels a run on the sidecar it was placed on.
    pub fn canceller(&self) -> Canceller {
        let set = self.clone();
        let stop_answers = self
            .first()
            .map(SidecarClient::canceller)
            .unwrap_or_else(Canceller::none);
        Canceller::from_fn(move |run: RunId, reason| {
            let set = set.clone();
            async move {
                let index = set
                    .inner
                    .placed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&run)
                    .copied();
                match index.and_then(|i| set.inner.members.get(i)) {
                    Some(member) => member.client.canceller().cancel(run, reason).await,
                    // Not running anywhere (ended, or never placed).
                    None => Ok(()),
                }
            }
        })
        .with_stop_answers(move |e| stop_answers.is_stop_answer(e))
    }
}

/// A run's place in the set, released when the run ends (or is dropped).
struct Placement {
    set: SidecarSet,
    index: usize,
    run: RunId,
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Some(m) = self.set.inner.members.get(self.index) {
            let left = m
                .in_flight
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1);
            let spell = if left == 0 {
                m.busy_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
            } else {
                None
            };
            if let Some(metrics) = self.set.metrics() {
                metrics
                    .sidecar_in_flight
                    .with(&[m.endpoint()])
                    .set(i64::try_from(left).unwrap_or(i64::MAX));
                if let Some(since) = spell {
                    metrics
                        .sidecar_member_busy
                        .add(&[m.endpoint()], since.elapsed().as_secs_f64());
                }
            }
        }
        self.set
            .inner
            .placed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.run);
    }
}

/// Whether a failure says nothing about the run — no connection, no
/// answer — so that the sidecar, not the task, is in doubt.
fn says_nothing_of_the_run(e: &SidecarError) -> bool {
    match e {
        SidecarError::Transport { .. } => true,
        SidecarError::Rpc { code, .. } => {
            matches!(code, tonic::Code::Unavailable | tonic::Code::Unknown) && e.blame().is_none()
        }
        _ => false,
    }
}

/// The set's `ExecuteTask` service: see [`SidecarSet::execute`].
#[derive(Clone, Debug)]
pub struct SetExecute {
    set: SidecarSet,
}

/// The future of a [`SetExecute`] call.
pub type SetExecuteFuture =
    Pin<Box<dyn Future<Output = Result<ExecutionResult, SidecarError>> + Send + 'static>>;

impl tower::Service<ExecuteRequest> for SetExecute {
    type Response = ExecutionResult;
    type Error = SidecarError;
    type Future = SetExecuteFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call chooses its sidecar; a full one queues its runs.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ExecuteRequest) -> Self::Future {
        let set = self.set.clone();
        Box::pin(async move {
            let run = req.run();
            let Some(index) = set.place(&req.model) else {
                return Err(SidecarError::Rpc {
                    task_id: Some(req.task_id),
                    code: tonic::Code::Unavailable,
                    message: format!("no sidecar that serves {} is up", req.model),
                });
            };
            let member = &set.inner.members[index];
            let before = member.in_flight.fetch_add(1, Ordering::Relaxed);
            if before == 0 {
                *member
                    .busy_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::time::Instant::now());
            }
            member.runs.fetch_add(1, Ordering::Relaxed);
            let cold = !member.has_loaded(&req.model);
            if cold {
                member.cold_runs.fetch_add(1, Ordering::Relaxed);
                member.loading.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(metrics) = set.metrics() {
                let name = [member.endpoint()];
                metrics.sidecar_runs.with(&name).inc();
                if cold {
                    metrics.sidecar_cold_runs.with(&name).inc();
                }
                metrics
                    .sidecar_in_flight
                    .with(&name)
                    .set(i64::try_from(before + 1).unwrap_or(i64::MAX));
            }
            set.inner
                .placed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(run, index);
            let _placement = Placement {
                set: set.clone(),
                index,
                run,
            };
            let model = req.model.clone();
            tracing::debug!(%run, sidecar = member.endpoint(), "run placed");
            let result = member.client.execute_attaching().oneshot(req).await;
            if cold {
                member.loading.fetch_sub(1, Ordering::Relaxed);
                // The load may have evicted another model: learn what it
                // holds now, rather than at the next check.
                if let Ok(caps) = member.client.capabilities().await {
                    member.learn(caps);
                }
            }
            match &result {
                Ok(_) => {
                    write(&member.loaded).insert(model);
                }
                Err(e) if says_nothing_of_the_run(e) => {
                    if let Some(metrics) = set.metrics() {
                        metrics.sidecar_failures.with(&[member.endpoint()]).inc();
                    }
                    set.set_up(index, false);
                }
                Err(_) => {}
            }
            result
        })
    }
}
