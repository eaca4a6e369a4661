// Over ~600 lines: the reference sidecar's gRPC service is one trait
// implementation over one run table; the models and the store are files of
// their own.
//! The reference sidecar: a real tonic server for the `nsn.sidecar.Sidecar`
//! service that runs the [built-in models](super::models) on the CPU, over a
//! [content-addressed store](super::store).
//!
//! - `ExecuteTask` reads the input from the store, runs the model (bounded by
//!   `timeout_ms`), stores the output and answers with its CID, which is the
//!   CID of the output bytes. Failures come back in the body (`success =
//!   false`, `error_message`); a gRPC error status means the call itself
//!   failed. If the caller goes away mid-run, the run is cancelled.
//! - `GetTaskStatus` reports `pending`, `running`, `completed`, `failed` or
//!   `cancelled`, with progress, stage and an ETA.
//! - `CancelTask` asks a run to stop; its status turns `cancelled` only once
//!   the model has actually stopped.
//! - `HealthCheck`, and the standard `grpc.health.v1` service.
//! - `ListPlugins` / `GetLoadedModels` report the built-in models;
//!   `LoadModel` / `UnloadModel` accept them (they are always loaded).
//! - Container RPCs answer `UNIMPLEMENTED`; `GetVramStatus` reports no GPU.
//!
//! **Our runs are ours.** Each run keeps its request (model, input,
//! parameters, lane): a request under a known run id that asks for
//! something else is refused `ALREADY_EXISTS`, never answered with the
//! other's record; the same request still running is refused with
//! `nsn-attach: same-request` (ask again once it ends), and once completed
//! is answered again from its record. Failed runs carry a structured
//! verdict in the `nsn-verdict` response metadata (`model-failed` only for
//! the model failing on a valid input). With a credential
//! ([`ReferenceSidecar::set_auth_token`]) every call of the `Sidecar`
//! service must carry it.
//!
//! **NSN's semantics** ([`Semantics::Nsn`]): the stand-in behaves as the
//! sidecar NSN deploys — single-use run ids, a cancel that only marks the
//! run while its model goes on, NSN's codes and words, no verdict — so that
//! the node can be run against it. [`SetupFault`] makes runs fail for the
//! operator's set-up, as NSN's sidecar reports it.
//!
//! ```no_run
//! use nsn_lane1::sidecar::server::ReferenceSidecar;
//! use nsn_lane1::sidecar::store::BlobStore;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let sidecar = ReferenceSidecar::new(BlobStore::in_memory());
//! sidecar.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::client::{ATTACH_HEADER, Blame, VERDICT_CANCELLED, VERDICT_HEADER};
use super::models::{self, ModelError, ModelSpec};
use super::proto;
use super::proto::sidecar_server::{Sidecar, SidecarServer};
use super::store::BlobStore;
use crate::task::{Cid, Lane};

/// A run's state: the same statuses the client reads (`pending` …
/// `cancelled`).
pub use super::client::SidecarStatus as RunState;

/// What a run was asked to do: a request under a known run id is answered
/// only if it asks for the same.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    model_id: String,
    plugin_name: String,
    input_cid: String,
    parameters: Vec<u8>,
    lane: u32,
}

impl Identity {
    fn of(r: &proto::ExecuteTaskRequest) -> Self {
        Identity {
            model_id: r.model_id.clone(),
            plugin_name: r.plugin_name.clone(),
            input_cid: r.input_cid.clone(),
            parameters: r.parameters.clone(),
            lane: r.lane,
        }
    }
}

/// How the sidecar treats run ids, cancels and failures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Semantics {
    /// The reference sidecar's own: a known run id with the same request
    /// is attached to (running) or answered again (completed), with another
    /// request refused; a cancel stops the model; failures carry a
    /// structured verdict ([`VERDICT_HEADER`]).
    #[default]
    Reference,
    /// As NSN's deployed sidecar behaves: run ids are single use (a known
    /// id is `ALREADY_EXISTS` "Task already running: <id>", whatever its
    /// end); a cancel only marks the run (the model goes on, and its call
    /// ends `CANCELLED` "Task was cancelled: <id>"); failures in NSN's
    /// codes and words, with no verdict.
    Nsn,
}

impl std::str::FromStr for Semantics {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(Semantics::Reference),
            "nsn" => Ok(Semantics::Nsn),
            other => Err(format!("unknown semantics {other:?} (reference, nsn)")),
        }
    }
}

/// A fault of the operator's set-up the sidecar can be told to show, as
/// NSN's sidecar reports it: every run fails with it while it is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupFault {
    /// "Task execution failed: plugin runner not configured" (in the body).
    RunnerNotConfigured,
    /// "Plugin policy violation: untrusted plugins require sandboxed
    /// execution" (in the body).
    SandboxRequired,
    /// `RESOURCE_EXHAUSTED` "Insufficient VRAM: …".
    InsufficientVram,
    /// `FAILED_PRECONDITION` "Container is unhealthy: …".
    ContainerUnhealthy,
}

impl std::str::FromStr for SetupFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "runner-not-configured" => Ok(SetupFault::RunnerNotConfigured),
            "sandbox-required" => Ok(SetupFault::SandboxRequired),
            "insufficient-vram" => Ok(SetupFault::InsufficientVram),
            "container-unhealthy" => Ok(SetupFault::ContainerUnhealthy),
            other => Err(format!(
                "unknown set-up fault {other:?} (runner-not-configured, sandbox-required, insufficient-vram, container-unhealthy)"
            )),
        }
    }
}

#[derive(Debug, Default)]
struct Settings {
    /// The built-in models it serves (`None`: all).
    served: Option<std::collections::HashSet<String>>,
    /// Models are loaded before they run (`None`: all are always loaded).
    residency: Option<Residency>,
    semantics: Semantics,
    setup_fault: Option<SetupFault>,
    /// While this file exists and names a fault, runs fail with it (for a
    /// sidecar in another process).
    setup_fault_file: Option<std::path::PathBuf>,
    auth: Option<crate::sidecar::client::AuthToken>,
}

/// How the reference sidecar keeps models loaded, as a GPU box does: a
/// model not loaded takes `load` before its first run, and at most `slots`
/// stay loaded (the least recently used leaves first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Residency {
    /// How long a load takes.
    pub load: Duration,
    /// How many models fit at once (its VRAM, in models).
    pub slots: usize,
}

/// The VRAM each loaded model takes, as the reference sidecar reports it
/// (`ListPlugins`, `GetLoadedModels`, `GetVramStatus`) while it keeps models
/// loaded: its budget is `slots` of these.
pub const MODEL_VRAM_MB: u32 = 4096;

impl Residency {
    /// Room for as many models as `vram_mb` holds ([`MODEL_VRAM_MB`] each; at least one).
    pub fn from_vram_mb(load: Duration, vram_mb: u64) -> Self {
        Residency {
            load,
            slots: usize::try_from(vram_mb / u64::from(MODEL_VRAM_MB))
                .unwrap_or(usize::MAX)
                .max(1),
        }
    }
}

#[derive(Debug)]
struct Run {
    state: RunState,
    /// The model is still at work (NSN's cancel marks a run `cancelled`
    /// while its model goes on).
    active: bool,
    identity: Identity,
    progress: f32,
    stage: &'static str,
    error: String,
    cancel: CancellationToken,
    started: Instant,
    /// The answer of a run that completed: asked again for the same task,
    /// the sidecar gives it again instead of running the model twice.
    answer: Option<proto::ExecuteTaskResponse>,
}

#[derive(Debug)]
struct Runs {
    by_id: HashMap<String, Run>,
    /// How many runs are `Running` now.
    running: usize,
    /// Finished runs, oldest first, for eviction.
    finished: VecDeque<String>,
    /// When each finished run ran, oldest first (the last [`FINISHED_KEPT`]).
    history: VecDeque<RunRecord>,
}

/// When one run ran at the sidecar, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// The task id.
    pub task_id: String,
    /// How it ended.
    pub state: RunState,
    /// When the run began.
    pub started: Instant,
    /// When it ended.
    pub ended: Instant,
}

/// How many finished runs the sidecar remembers for `GetTaskStatus`.
const FINISHED_KEPT: usize = 10_000;

/// Bounds that keep the reference sidecar a safe neighbour on a shared
/// machine: how many models run at once (more are refused with
/// `RESOURCE_EXHAUSTED`, which a node treats as the sidecar's trouble, not
/// the task's) and how long any run may take (a longer one is stopped and
/// fails with "timed out", whatever timeout the request asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidecarLimits {
    /// Most runs at once.
    pub max_runs: usize,
    /// Longest run.
    pub max_run_time: Duration,
}

impl Default for SidecarLimits {
    fn default() -> Self {
        SidecarLimits {
            max_runs: 128,
            max_run_time: Duration::from_secs(600),
        }
    }
}

struct Inner {
    store: BlobStore,
    limits: SidecarLimits,
    settings: Mutex<Settings>,
    /// The most runs that were running at once.
    max_running: std::sync::atomic::AtomicUsize,
    /// `GetTaskStatus` calls answered since start.
    status_calls: std::sync::atomic::AtomicU64,
    /// Models loaded, least recently used first (with a residency).
    loaded: Mutex<Vec<String>>,
    /// Loads made since start.
    loads: std::sync::atomic::AtomicU64,
    runs: Mutex<Runs>,
    changed: watch::Sender<u64>,
    started: Instant,
}

/// The reference sidecar. Clones share one sidecar.
#[derive(Clone)]
pub struct ReferenceSidecar {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReferenceSidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceSidecar")
            .field("blobs", &self.inner.store.len())
            .finish()
    }
}

/// How a request for a run began.
#[derive(Debug)]
enum Begun {
    /// A new run, stopped by this token.
    Run(CancellationToken),
    /// The task completed before: its answer.
    Answered(proto::ExecuteTaskResponse),
}

/// Stops a run if the call that owns it is dropped (the client went away).
struct CancelOnDrop(Option<CancellationToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            token.cancel();
        }
    }
}

/// A failed run's answer: the message in the body and, from a sidecar
/// that gives one, the verdict in the response metadata.
fn body_error(
    message: impl Into<String>,
    verdict: Option<&'static str>,
) -> Response<proto::ExecuteTaskResponse> {
    answer(
        proto::ExecuteTaskResponse {
            success: false,
            error_message: message.into(),
            ..Default::default()
        },
        verdict,
    )
}

fn answer(
    body: proto::ExecuteTaskResponse,
    verdict: Option<&'static str>,
) -> Response<proto::ExecuteTaskResponse> {
    let mut response = Response::new(body);
    if let Some(v) = verdict {
        response.metadata_mut().insert(
            VERDICT_HEADER,
            tonic::metadata::MetadataValue::from_static(v),
        );
    }
    response
}

/// Why a request was not run, in the reference sidecar's words and verdict.
struct Unfit {
    message: String,
    blame: Blame,
    /// NSN's sidecar refuses this with a status rather than in the body.
    nsn: Option<Status>,
}

impl ReferenceSidecar {
    /// A sidecar over this store, with the default [`SidecarLimits`].
    pub fn new(store: BlobStore) -> Self {
        Self::with_limits(store, SidecarLimits::default())
    }

    /// A sidecar over this store, with these limits.
    pub fn with_limits(store: BlobStore, limits: SidecarLimits) -> Self {
        let (changed, _) = watch::channel(0);
        ReferenceSidecar {
            inner: Arc::new(Inner {
                store,
                limits,
                settings: Mutex::default(),
                max_running: std::sync::atomic::AtomicUsize::new(0),
                status_calls: std::sync::atomic::AtomicU64::new(0),
                loaded: Mutex::new(Vec::new()),
                loads: std::sync::atomic::AtomicU64::new(0),
                runs: Mutex::new(Runs {
                    by_id: HashMap::new(),
                    running: 0,
                    finished: VecDeque::new(),
                    history: VecDeque::new(),
                }),
                changed,
                started: Instant::now(),
            }),
        }
    }

    /// Its blob store (to put inputs in, or read outputs).
    pub fn store(&self) -> &BlobStore {
        &self.inner.store
    }

    /// The tonic service, for composing into a server of one's own.
    pub fn into_service(self) -> SidecarServer<Self> {
        SidecarServer::new(self)
    }

    /// Serves the sidecar and `grpc.health.v1` on `listener` until `shutdown`
    /// resolves; in-flight calls finish first.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<SidecarServer<ReferenceSidecar>>()
            .await;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let me = self.clone();
        // The node's credential, when one is set: checked on every call of
        // the Sidecar service (the standard health service stays open).
        let check = move |request: Request<()>| -> Result<Request<()>, Status> {
            let settings = me.settings();
            let Some(token) = &settings.auth else {
                return Ok(request);
            };
            match request.metadata().get("authorization") {
                Some(v) if token.admits(v.as_bytes()) => Ok(request),
                _ => Err(Status::unauthenticated(
                    "missing or wrong credential (authorization: Bearer <token>)",
                )),
            }
        };
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(SidecarServer::with_interceptor(self, check))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// When the finished runs ran (the last ten thousand), oldest first: to
    /// measure how busy the sidecar was.
    pub fn run_history(&self) -> Vec<RunRecord> {
        self.runs().history.iter().cloned().collect()
    }

    /// The most runs that have been running at once since start.
    pub fn max_concurrent_runs(&self) -> usize {
        self.inner
            .max_running
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many `GetTaskStatus` calls it has had since start.
    pub fn status_calls(&self) -> u64 {
        self.inner
            .status_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The state of a run, if the sidecar knows it.
    pub fn state(&self, task_id: &str) -> Option<RunState> {
        self.runs().by_id.get(task_id).map(|r| r.state)
    }

    /// The runs of a chain task the sidecar knows (run ids `17`, `17-1`,
    /// …), by attempt.
    pub fn runs_of(&self, task: crate::task::TaskId) -> Vec<(crate::task::RunId, RunState)> {
        let mut runs: Vec<_> = self
            .runs()
            .by_id
            .iter()
            .filter_map(|(id, run)| {
                let run_id: crate::task::RunId = id.parse().ok()?;
                (run_id.task == task).then_some((run_id, run.state))
            })
            .collect();
        runs.sort_by_key(|r| r.0);
        runs
    }

    /// Waits until the run `task_id` is in `state` (for tests and tools that
    /// must act at a given point of a run, without polling).
    pub async fn wait_for(&self, task_id: &str, state: RunState) {
        let mut rx = self.inner.changed.subscribe();
        loop {
            if self.state(task_id) == Some(state) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The ids of the runs running now.
    pub fn running_ids(&self) -> Vec<String> {
        self.runs()
            .by_id
            .iter()
            .filter(|(_, r)| r.state == RunState::Running)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Waits until some run is running (without polling).
    pub async fn wait_running(&self) {
        let mut rx = self.inner.changed.subscribe();
        while self.running_ids().is_empty() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    fn runs(&self) -> MutexGuard<'_, Runs> {
        // Every critical section leaves the map whole, so a poisoned lock is
        // still consistent.
        self.inner
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How it treats run ids, cancels and failures (default
    /// [`Semantics::Reference`]).
    pub fn set_semantics(&self, semantics: Semantics) {
        self.settings().semantics = semantics;
    }

    /// Serves only these built-in models (`None`: all of them).
    pub fn set_served(&self, models: Option<&[&str]>) {
        self.settings().served = models.map(|m| m.iter().map(|s| (*s).to_owned()).collect());
    }

    /// Loads models before they run, keeping at most `residency.slots`
    /// loaded (`None`: all always loaded, the default).
    pub fn set_residency(&self, residency: Option<Residency>) {
        self.settings().residency = residency;
        if let Some(r) = residency {
            let mut loaded = self.loaded();
            while loaded.len() > r.slots {
                loaded.remove(0);
            }
        }
    }

    /// Loads `model` now (as `LoadModel`), evicting the least recently used
    /// if it has no room; false if it does not serve it.
    pub fn preload(&self, model: &str) -> bool {
        if !self.serves(model) {
            return false;
        }
        self.mark_used(model);
        true
    }

    /// The models loaded now, least recently used first (with no residency
    /// set, every model it serves).
    pub fn loaded_models(&self) -> Vec<String> {
        if self.settings().residency.is_none() {
            return models::BUILTIN
                .iter()
                .filter(|m| self.serves(m.name))
                .map(|m| m.name.to_owned())
                .collect();
        }
        self.loaded().clone()
    }

    /// Loads made since start (runs that found their model not loaded).
    pub fn loads(&self) -> u64 {
        self.inner.loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn serves(&self, model: &str) -> bool {
        models::find(model).is_some()
            && self
                .settings()
                .served
                .as_ref()
                .is_none_or(|s| s.contains(model))
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.inner
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `model` the most recently used, loading it (and evicting the
    /// least recently used past the slots) if it was not.
    fn mark_used(&self, model: &str) -> bool {
        let slots = self.settings().residency.map_or(usize::MAX, |r| r.slots);
        let mut loaded = self.loaded();
        let was = loaded.iter().position(|m| m == model);
        if let Some(at) = was {
            loaded.remove(at);
        }
        loaded.push(model.to_owned());
        while loaded.len() > slots.max(1) {
            loaded.remove(0);
        }
        was.is_some()
    }

    /// Before a run: the load its model needs, if it is not loaded.
    fn load_time(&self, model: &str) -> Option<Duration> {
        let residency = self.settings().residency?;
        if self.loaded().iter().any(|m| m == model) {
            return None;
        }
        Some(residency.load)
    }

    /// Makes every run fail with a set-up fault (`None`: none).
    pub fn set_setup_fault(&self, fault: Option<SetupFault>) {
        self.settings().setup_fault = fault;
    }

    /// Makes runs fail with the set-up fault a file names, while it exists
    /// (for a sidecar in a process of its own).
    pub fn set_setup_fault_file(&self, path: Option<std::path::PathBuf>) {
        self.settings().setup_fault_file = path;
    }

    /// Requires `authorization: Bearer <token>` on every call of the
    /// `Sidecar` service ([`serve`](Self::serve) checks it).
    pub fn set_auth_token(&self, token: Option<crate::sidecar::client::AuthToken>) {
        self.settings().auth = token;
    }

    /// NSN's cancel: the run is marked `cancelled`; its model goes on.
    fn mark_cancelled(&self, r: &proto::CancelTaskRequest) -> RpcResult<proto::CancelTaskResponse> {
        let mut runs = self.runs();
        let run = runs
            .by_id
            .get_mut(&r.task_id)
            .ok_or_else(|| Status::not_found(format!("Task not found: {}", r.task_id)))?;
        let was_running = run.state == RunState::Running;
        if was_running {
            tracing::info!(task_id = %r.task_id, reason = %r.reason, "run marked cancelled");
            run.state = RunState::Cancelled;
            run.stage = RunState::Cancelled.as_str();
            run.error = format!("Cancelled: {}", r.reason);
        }
        drop(runs);
        self.notify();
        Ok(Response::new(proto::CancelTaskResponse {
            success: true,
            error_message: String::new(),
            was_running,
        }))
    }

    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn semantics(&self) -> Semantics {
        self.settings().semantics
    }

    fn setup_fault(&self) -> Option<SetupFault> {
        let settings = self.settings();
        if let Some(f) = settings.setup_fault {
            return Some(f);
        }
        let path = settings.setup_fault_file.clone()?;
        drop(settings);
        std::fs::read_to_string(path).ok()?.parse().ok()
    }

    /// Registers a run. A known run id: with NSN's semantics always
    /// refused; with the reference's, refused for another request, attached
    /// to while the same request runs, answered again once it completed.
    fn begin(&self, r: &proto::ExecuteTaskRequest) -> Result<Begun, Status> {
        let task_id = r.task_id.as_str();
        let identity = Identity::of(r);
        let semantics = self.semantics();
        let mut runs = self.runs();
        if let Some(run) = runs.by_id.get(task_id) {
            if semantics == Semantics::Nsn {
                return Err(Status::already_exists(format!(
                    "Task already running: {task_id}"
                )));
            }
            if run.identity != identity {
                return Err(Status::already_exists(format!(
                    "run id {task_id} belongs to another request"
                )));
            }
            if !run.state.is_final() {
                let mut status =
                    Status::already_exists(format!("task {task_id} is already running"));
                status.metadata_mut().insert(
                    ATTACH_HEADER,
                    tonic::metadata::MetadataValue::from_static("same-request"),
                );
                return Err(status);
            }
            if let Some(answer) = &run.answer {
                return Ok(Begun::Answered(answer.clone()));
            }
            runs.finished.retain(|id| id != task_id);
        }
        let max = self.inner.limits.max_runs;
        if runs.running >= max {
            return Err(Status::resource_exhausted(format!(
                "the sidecar runs at most {max} models at once"
            )));
        }
        let cancel = CancellationToken::new();
        runs.by_id.insert(
            task_id.to_owned(),
            Run {
                state: RunState::Running,
                active: true,
                identity,
                progress: 0.0,
                stage: "starting",
                error: String::new(),
                cancel: cancel.clone(),
                started: Instant::now(),
                answer: None,
            },
        );
        runs.running += 1;
        self.inner
            .max_running
            .fetch_max(runs.running, std::sync::atomic::Ordering::Relaxed);
        drop(runs);
        self.notify();
        Ok(Begun::Run(cancel))
    }

    fn set_progress(&self, task_id: &str, progress: f32, stage: &'static str) {
        if let Some(run) = self.runs().by_id.get_mut(task_id)
            && run.state == RunState::Running
        {
            run.progress = progress.clamp(0.0, 1.0);
            run.stage = stage;
        }
    }

    /// Records how a run ended. A run marked cancelled while its model went
    /// on (NSN's cancel) stays cancelled. Returns the state it ended in.
    fn finish(&self, task_id: &str, state: RunState, error: String) -> RunState {
        let mut runs = self.runs();
        let mut ended = state;
        if let Some(run) = runs.by_id.get_mut(task_id) {
            let was_active = std::mem::replace(&mut run.active, false);
            let started = run.started;
            if run.state == RunState::Cancelled && was_active {
                ended = RunState::Cancelled;
            } else {
                run.state = state;
                run.error = error;
                if state == RunState::Completed {
                    run.progress = 1.0;
                }
                run.stage = state.as_str();
            }
            if was_active {
                runs.running -= 1;
                let record = RunRecord {
                    task_id: task_id.to_owned(),
                    state: ended,
                    started,
                    ended: Instant::now(),
                };
                runs.history.push_back(record);
                if runs.history.len() > FINISHED_KEPT {
                    runs.history.pop_front();
                }
            }
            runs.finished.push_back(task_id.to_owned());
            while runs.finished.len() > FINISHED_KEPT {
                if let Some(old) = runs.finished.pop_front() {
                    runs.by_id.remove(&old);
                }
            }
        }
        drop(runs);
        self.notify();
        ended
    }

    /// Checks a request and finds its model and input.
    fn prepare(
        &self,
        r: &proto::ExecuteTaskRequest,
    ) -> Result<(&'static ModelSpec, Arc<[u8]>), Unfit> {
        let task = |message: String, nsn: Option<Status>| Unfit {
            message,
            blame: Blame::Task,
            nsn,
        };
        let lane = Lane::from_index(r.lane).map_err(|e| {
            task(
                format!("invalid input: {e}"),
                Some(Status::invalid_argument(
                    "Invalid request: invalid lane value",
                )),
            )
        })?;
        let name = if r.plugin_name.is_empty() {
            &r.model_id
        } else {
            &r.plugin_name
        };
        let model = models::find(name)
            .filter(|_| self.serves(name))
            .ok_or_else(|| {
                task(
                    format!("unknown model {name:?}"),
                    Some(Status::not_found(format!("Plugin not found: {name}"))),
                )
            })?;
        if !model.lanes.contains(&lane) {
            return Err(task(
                format!("unsupported lane: model {name:?} does not serve {lane}"),
                Some(Status::failed_precondition(format!(
                    "Plugin policy violation: plugin '{name}' does not support lane {}",
                    r.lane
                ))),
            ));
        }
        if !r.parameters.is_empty() {
            let value = serde_json::from_slice::<serde_json::Value>(&r.parameters)
                .map_err(|e| task(format!("invalid parameters: not valid JSON: {e}"), None))?;
            if self.semantics() == Semantics::Nsn && !value.is_object() {
                return Err(task(
                    "Invalid request: parameters must be a JSON object".into(),
                    None,
                ));
            }
        }
        if let Some(fault) = self.setup_fault() {
            return Err(setup_unfit(fault));
        }
        let cid = Cid::parse(&r.input_cid)
            .map_err(|e| task(format!("invalid input: input_cid: {e}"), None))?;
        let input = self
            .inner
            .store
            .get(&cid)
            .map_err(|e| Unfit {
                message: format!("input {cid} could not be read: {e}"),
                blame: Blame::Setup,
                nsn: None,
            })?
            .ok_or_else(|| {
                task(
                    format!("not found: input {cid} is not in the sidecar's store"),
                    None,
                )
            })?;
        Ok((model, input))
    }

    /// Runs a model to its end and records the outcome; the answer to
    /// `ExecuteTask`, with its verdict.
    async fn run(
        self,
        model: &'static ModelSpec,
        input: Arc<[u8]>,
        r: proto::ExecuteTaskRequest,
        cancel: CancellationToken,
    ) -> Result<Response<proto::ExecuteTaskResponse>, Status> {
        let started = Instant::now();
        let me = self.clone();
        let id = r.task_id.clone();
        let progress: models::ProgressFn = Arc::new(move |p, stage| me.set_progress(&id, p, stage));
        // A model not loaded is loaded first (the run's time counts it).
        if let Some(load) = self.load_time(model.name) {
            self.inner
                .loads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(load) => {}
                () = cancel.cancelled() => {}
            }
        }
        self.mark_used(model.name);
        let run = models::run(model, input, &r.parameters, cancel.clone(), progress);
        // The request's timeout, never past the sidecar's own bound.
        let cap = self.inner.limits.max_run_time;
        let limit = match r.timeout_ms {
            0 => cap,
            ms => Duration::from_millis(ms).min(cap),
        };
        let outcome = {
            tokio::pin!(run);
            tokio::select! {
                biased;
                result = &mut run => Ok(result),
                () = tokio::time::sleep(limit) => {
                    // Stop the model and wait for it to end before answering.
                    cancel.cancel();
                    let _ = run.await;
                    Err(limit)
                }
            }
        };
        let nsn = self.semantics() == Semantics::Nsn;
        let execution_time_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let failed = |state: RunState, message: String, blame: Option<Blame>| {
            let ended = self.finish(&r.task_id, state, message.clone());
            if ended == RunState::Cancelled && nsn {
                // Marked cancelled while the model went on.
                return Err(Status::cancelled(format!(
                    "Task was cancelled: {}",
                    r.task_id
                )));
            }
            let (message, verdict) = if nsn {
                (format!("Task execution failed: {message}"), None)
            } else if ended == RunState::Cancelled {
                ("cancelled".to_owned(), Some(VERDICT_CANCELLED))
            } else {
                (message, blame.map(Blame::verdict))
            };
            Ok(answer(
                proto::ExecuteTaskResponse {
                    success: false,
                    error_message: message,
                    execution_time_ms,
                    ..Default::default()
                },
                verdict,
            ))
        };
        match outcome {
            Err(limit) if nsn => {
                self.finish(&r.task_id, RunState::Failed, "timed out".into());
                Err(Status::deadline_exceeded(format!(
                    "Task {} timed out after {} ms",
                    r.task_id,
                    limit.as_millis()
                )))
            }
            Err(limit) => failed(
                RunState::Failed,
                format!("timed out after {} ms", limit.as_millis()),
                Some(Blame::Time),
            ),
            Ok(Err(ModelError::Cancelled)) => failed(RunState::Cancelled, "cancelled".into(), None),
            Ok(Err(
                e @ (ModelError::InvalidInput { .. } | ModelError::InvalidParameters { .. }),
            )) => failed(RunState::Failed, e.to_string(), Some(Blame::Task)),
            Ok(Err(e)) => failed(RunState::Failed, e.to_string(), Some(Blame::Model)),
            Ok(Ok(output)) => {
                let len = output.len();
                match self.inner.store.put(output) {
                    Ok(cid) => {
                        let metadata = serde_json::json!({
                            "model": model.name,
                            "output_bytes": len,
                        });
                        let body = proto::ExecuteTaskResponse {
                            success: true,
                            error_message: String::new(),
                            output_cid: cid.to_string(),
                            execution_time_ms,
                            result_metadata: metadata.to_string().into_bytes(),
                        };
                        let ended = self.finish(&r.task_id, RunState::Completed, String::new());
                        if ended == RunState::Cancelled {
                            // NSN: marked cancelled while the model went on.
                            return Err(Status::cancelled(format!(
                                "Task was cancelled: {}",
                                r.task_id
                            )));
                        }
                        if let Some(run) = self.runs().by_id.get_mut(&r.task_id) {
                            run.answer = Some(body.clone());
                        }
                        Ok(Response::new(body))
                    }
                    Err(e) => failed(
                        RunState::Failed,
                        format!("output could not be stored: {e}"),
                        Some(Blame::Setup),
                    ),
                }
            }
        }
    }
}

/// A failure in NSN's sidecar's words: what the plugin wrote, behind
/// "Task execution failed: ", unless it is NSN's own wording already.
fn nsn_words(unfit: &Unfit) -> String {
    const OWN: [&str; 3] = [
        "Invalid request:",
        "Task execution failed:",
        "Plugin policy violation:",
    ];
    if OWN.iter().any(|p| unfit.message.starts_with(p)) {
        return unfit.message.clone();
    }
    if let Some(rest) = unfit.message.strip_prefix("invalid parameters: ") {
        return format!("Invalid request: {rest}");
    }
    format!("Task execution failed: {}", unfit.message)
}

/// How a set-up fault shows: the reference sidecar's words and verdict,
/// and NSN's status where NSN's sidecar refuses the call.
fn setup_unfit(fault: SetupFault) -> Unfit {
    let (message, nsn) = match fault {
        SetupFault::RunnerNotConfigured => (
            "Task execution failed: plugin runner not configured".to_owned(),
            None,
        ),
        SetupFault::SandboxRequired => (
            "Plugin policy violation: untrusted plugins require sandboxed execution".to_owned(),
            None,
        ),
        SetupFault::InsufficientVram => {
            let m = "Insufficient VRAM: required 8.0 GB, available 0.5 GB".to_owned();
            (m.clone(), Some(Status::resource_exhausted(m)))
        }
        SetupFault::ContainerUnhealthy => {
            let m = "Container is unhealthy: builtin".to_owned();
            (m.clone(), Some(Status::failed_precondition(m)))
        }
    };
    Unfit {
        message,
        blame: Blame::Setup,
        nsn,
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what}: the reference sidecar runs built-in models and has no containers"
    ))
}

#[tonic::async_trait]
impl Sidecar for ReferenceSidecar {
    async fn start_container(
        &self,
        _: Request<proto::StartContainerRequest>,
    ) -> RpcResult<proto::StartContainerResponse> {
        Err(unimplemented("StartContainer"))
    }

    async fn stop_container(
        &self,
        _: Request<proto::StopContainerRequest>,
    ) -> RpcResult<proto::StopContainerResponse> {
        Err(unimplemented("StopContainer"))
    }

    async fn health_check(
        &self,
        request: Request<proto::HealthCheckRequest>,
    ) -> RpcResult<proto::HealthCheckResponse> {
        let include_metrics = request.into_inner().include_metrics;
        let running = self.runs().running;
        Ok(Response::new(proto::HealthCheckResponse {
            healthy: true,
            status: format!("serving ({running} running)"),
            uptime_seconds: self.inner.started.elapsed().as_secs(),
            metrics: include_metrics.then(proto::ContainerMetrics::default),
        }))
    }

    async fn load_model(
        &self,
        request: Request<proto::LoadModelRequest>,
    ) -> RpcResult<proto::LoadModelResponse> {
        let id = request.into_inner().model_id;
        Ok(Response::new(
            match models::find(&id).filter(|_| self.preload(&id)) {
                Some(_) => proto::LoadModelResponse {
                    success: true,
                    ..Default::default()
                },
                None => proto::LoadModelResponse {
                    success: false,
                    error_message: format!("unknown model {id:?}"),
                    ..Default::default()
                },
            },
        ))
    }

    async fn unload_model(
        &self,
        request: Request<proto::UnloadModelRequest>,
    ) -> RpcResult<proto::UnloadModelResponse> {
        let id = request.into_inner().model_id;
        if self.settings().residency.is_some() {
            let mut loaded = self.loaded();
            let was = loaded.iter().position(|m| *m == id);
            if let Some(at) = was {
                loaded.remove(at);
            }
            return Ok(Response::new(proto::UnloadModelResponse {
                success: was.is_some(),
                error_message: if was.is_some() {
                    String::new()
                } else {
                    format!("{id:?} is not loaded")
                },
                vram_freed_gb: if was.is_some() {
                    MODEL_VRAM_MB as f32 / 1024.0
                } else {
                    0.0
                },
            }));
        }
        Ok(Response::new(proto::UnloadModelResponse {
            success: false,
            error_message: match models::find(&id) {
                Some(_) => format!("{id:?} is built in and stays loaded"),
                None => format!("unknown model {id:?}"),
            },
            vram_freed_gb: 0.0,
        }))
    }

    async fn get_loaded_models(
        &self,
        _: Request<proto::GetLoadedModelsRequest>,
    ) -> RpcResult<proto::GetLoadedModelsResponse> {
        let models = self
            .loaded_models()
            .into_iter()
            .map(|name| proto::LoadedModel {
                model_id: name,
                container_id: "builtin".to_owned(),
                vram_gb: 0.0,
                state: "hot".to_owned(),
                priority: 0,
                last_used_timestamp: 0,
            })
            .collect();
        Ok(Response::new(proto::GetLoadedModelsResponse { models }))
    }

    async fn list_plugins(
        &self,
        request: Request<proto::ListPluginsRequest>,
    ) -> RpcResult<proto::ListPluginsResponse> {
        let lane = request.into_inner().lane;
        let filter = if lane.is_empty() {
            None
        } else {
            Some(
                lane.parse::<Lane>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            )
        };
        let plugins = models::BUILTIN
            .iter()
            .filter(|m| filter.is_none_or(|l| m.lanes.contains(&l)) && self.serves(m.name))
            .map(|m| proto::PluginInfo {
                name: m.name.to_owned(),
                version: m.version.to_owned(),
                supported_lanes: m.lanes.iter().map(|l| l.as_str().to_owned()).collect(),
                deterministic: m.deterministic,
                max_latency_ms: m.max_latency_ms,
                vram_required_mb: if self.settings().residency.is_some() {
                    MODEL_VRAM_MB
                } else {
                    m.vram_required_mb
                },
            })
            .collect();
        Ok(Response::new(proto::ListPluginsResponse { plugins }))
    }

    async fn execute_task(
        &self,
        request: Request<proto::ExecuteTaskRequest>,
    ) -> RpcResult<proto::ExecuteTaskResponse> {
        let r = request.into_inner();
        if r.task_id.is_empty() {
            return Err(Status::invalid_argument("task_id is empty"));
        }
        let nsn = self.semantics() == Semantics::Nsn;
        if nsn && self.state(&r.task_id).is_some() {
            // Single use, whatever the first run's end.
            return Err(Status::already_exists(format!(
                "Task already running: {}",
                r.task_id
            )));
        }
        let (model, input) = match self.prepare(&r) {
            Ok(ok) => ok,
            Err(unfit) if nsn => {
                if let Some(status) = unfit.nsn {
                    return Err(status);
                }
                return Ok(body_error(nsn_words(&unfit), None));
            }
            Err(unfit) => return Ok(body_error(unfit.message, Some(unfit.blame.verdict()))),
        };
        let cancel = match self.begin(&r)? {
            Begun::Run(cancel) => cancel,
            Begun::Answered(answer) => return Ok(Response::new(answer)),
        };
        // The run lives in its own task, which records how it ended once the
        // model has stopped; if this call is dropped (the client went away),
        // the guard asks the run to stop.
        let guard = CancelOnDrop(Some(cancel.clone()));
        let run = tokio::spawn(self.clone().run(model, input, r, cancel));
        let response = match run.await {
            Ok(response) => response,
            Err(e) => {
                return Err(Status::internal(format!(
                    "Internal error: model run died: {e}"
                )));
            }
        };
        drop(guard);
        response
    }

    async fn get_task_status(
        &self,
        request: Request<proto::GetTaskStatusRequest>,
    ) -> RpcResult<proto::GetTaskStatusResponse> {
        self.inner
            .status_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = request.into_inner().task_id;
        let nsn = self.semantics() == Semantics::Nsn;
        let runs = self.runs();
        let run = runs.by_id.get(&id).ok_or_else(|| {
            Status::not_found(if nsn {
                format!("Task not found: {id}")
            } else {
                format!("no task {id:?}")
            })
        })?;
        let eta_ms = if run.state == RunState::Running && run.progress > 0.0 {
            let spent = run.started.elapsed().as_secs_f64();
            let left = spent * f64::from(1.0 - run.progress) / f64::from(run.progress);
            (left * 1000.0) as u64
        } else {
            0
        };
        Ok(Response::new(proto::GetTaskStatusResponse {
            status: run.state.as_str().to_owned(),
            progress: run.progress,
            error_message: run.error.clone(),
            current_stage: run.stage.to_owned(),
            eta_ms,
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<proto::CancelTaskRequest>,
    ) -> RpcResult<proto::CancelTaskResponse> {
        let r = request.into_inner();
        if self.semantics() == Semantics::Nsn {
            return self.mark_cancelled(&r);
        }
        let runs = self.runs();
        let Some(run) = runs.by_id.get(&r.task_id) else {
            return Ok(Response::new(proto::CancelTaskResponse {
                success: false,
                error_message: format!("no task {:?}", r.task_id),
                was_running: false,
            }));
        };
        if run.state.is_final() {
            let cancelled = run.state == RunState::Cancelled;
            return Ok(Response::new(proto::CancelTaskResponse {
                success: cancelled,
                error_message: if cancelled {
                    String::new()
                } else {
                    format!("task {} already {}", r.task_id, run.state.as_str())
                },
                was_running: false,
            }));
        }
        tracing::info!(task_id = %r.task_id, reason = %r.reason, "cancelling run");
        run.cancel.cancel();
        Ok(Response::new(proto::CancelTaskResponse {
            success: true,
            error_message: String::new(),
            was_running: true,
        }))
    }

    async fn get_vram_status(
        &self,
        _: Request<proto::GetVramStatusRequest>,
    ) -> RpcResult<proto::GetVramStatusResponse> {
        // CPU only: no VRAM, unless it keeps models as a GPU box does.
        let Some(residency) = self.settings().residency else {
            return Ok(Response::new(proto::GetVramStatusResponse::default()));
        };
        let gb = |mb: f64| (mb / 1024.0) as f32;
        let each = f64::from(MODEL_VRAM_MB);
        let loaded = self.loaded().clone();
        let total = gb(each * residency.slots as f64);
        let used = gb(each * loaded.len() as f64);
        Ok(Response::new(proto::GetVramStatusResponse {
            total_vram_gb: total,
            used_vram_gb: used,
            available_vram_gb: (total - used).max(0.0),
            model_allocations: loaded
                .into_iter()
                .map(|model_id| proto::ModelVram {
                    model_id,
                    vram_gb: gb(each),
                    container_id: "builtin".to_owned(),
                })
                .collect(),
            gpu_statuses: Vec::new(),
        }))
    }
}
