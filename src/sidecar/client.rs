//! The sidecar client: an [`Execute`] `tower::Service` for `ExecuteTask`, and
//! status, cancel, capability and health calls, over one lazily connected
//! tonic channel.
//!
//! Errors are typed ([`ExecutionError`]) and classified ([`ErrorClass`]):
//! a failure the sidecar reports in the response body (`success = false`) is
//! the model's verdict and permanent; a gRPC status means the call itself
//! failed, and `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `ABORTED`, a broken
//! connection, and our own deadline passing are worth another try.
//!
//! ```no_run
//! use std::time::Duration;
//! use nsn_lane1::sidecar::client::{ExecuteRequest, Parameters, SidecarClient, SidecarConfig};
//! use nsn_lane1::task::{Cid, Lane, ModelId, TaskId};
//! use tower::ServiceExt;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = SidecarClient::connect_lazy(SidecarConfig::new("http://127.0.0.1:50051"))?;
//! let output = client
//!     .execute()
//!     .oneshot(ExecuteRequest {
//!         task_id: TaskId(42),
//!         lane: Lane::Lane1,
//!         model: ModelId::new("sha256")?,
//!         input_cid: Cid::parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")?,
//!         parameters: Parameters::none(),
//!         timeout: Some(Duration::from_secs(30)),
//!     })
//!     .await?;
//! println!("{} in {:?}", output.output_cid, output.execution_time);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use super::proto;
use super::proto::sidecar_client::SidecarClient as Grpc;
use crate::task::{Cid, CidError, Lane, ModelId, Task, TaskId};

/// How to reach the sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    /// Its URI, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (`None`: no pings).
    pub keep_alive_interval: Option<Duration>,
    /// How long to wait for a keep-alive answer before the connection is
    /// considered dead.
    pub keep_alive_timeout: Duration,
    /// Added to a task's timeout to make the call's deadline, so the
    /// sidecar's own timeout answer can arrive first.
    pub timeout_grace: Duration,
    /// How long [`SidecarClient::cancel`] waits for the sidecar to report the
    /// task `cancelled`.
    pub cancel_wait: Duration,
    /// TLS, for a sidecar that is not on the same host.
    pub tls: Option<TlsConfig>,
}

/// TLS settings for the sidecar connection (needs the crate's `tls` feature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM of the CA that signed the sidecar's certificate (system roots are
    /// not consulted).
    pub ca_certificate_pem: Vec<u8>,
    /// The name to check the certificate against (default: the endpoint's host).
    pub domain: Option<String>,
}

impl SidecarConfig {
    /// Defaults for a sidecar at `endpoint`: 5 s connect timeout, 30 s
    /// keep-alive pings with a 10 s answer timeout, 2 s deadline grace, 10 s
    /// cancel wait, no TLS.
    pub fn new(endpoint: impl Into<String>) -> Self {
        SidecarConfig {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(10),
            timeout_grace: Duration::from_secs(2),
            cancel_wait: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Why a sidecar client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarConfigError {
    /// The endpoint is not a usable URI.
    #[error("invalid sidecar endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS was asked for, but this build has no TLS support.
    #[error("TLS was configured but nsn-lane1 was built without the `tls` feature")]
    TlsUnavailable,
    /// The TLS settings were refused.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    /// The client must be created inside a tokio runtime.
    #[error("the sidecar client must be created inside a tokio runtime")]
    NoRuntime,
}

/// A model's JSON parameters, checked to be JSON (or empty: the model's
/// defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parameters(Vec<u8>);

/// Parameters that are not JSON.
#[derive(Debug, thiserror::Error)]
#[error("task parameters are not valid JSON: {0}")]
pub struct ParametersError(#[from] serde_json::Error);

impl Parameters {
    /// No parameters: the model's defaults.
    pub fn none() -> Self {
        Parameters(Vec::new())
    }

    /// Parameters from a JSON value.
    pub fn json(value: &serde_json::Value) -> Self {
        Parameters(value.to_string().into_bytes())
    }

    /// Parameters from bytes, which must be JSON (or empty).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ParametersError> {
        if !bytes.is_empty() {
            serde_json::from_slice::<serde_json::Value>(&bytes)?;
        }
        Ok(Parameters(bytes))
    }

    /// The bytes sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// One task for the sidecar to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecuteRequest {
    /// The chain's task id (sent in decimal).
    pub task_id: TaskId,
    /// Its lane.
    pub lane: Lane,
    /// The model to run.
    pub model: ModelId,
    /// Where its input is.
    pub input_cid: Cid,
    /// The model's parameters.
    pub parameters: Parameters,
    /// How long the sidecar may take (`None`: no limit). Sent as
    /// `timeout_ms`; the call's deadline adds [`SidecarConfig::timeout_grace`].
    pub timeout: Option<Duration>,
}

impl ExecuteRequest {
    /// The request for a chain task, with default parameters.
    pub fn for_task(task: &Task, timeout: Option<Duration>) -> Self {
        ExecuteRequest {
            task_id: task.id,
            lane: task.lane,
            model: task.model.clone(),
            input_cid: task.input_cid.clone(),
            parameters: Parameters::none(),
            timeout,
        }
    }
}

/// A successful execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionResult {
    /// The task.
    pub task_id: TaskId,
    /// The output's CID (validated).
    pub output_cid: Cid,
    /// How long the sidecar says it took.
    pub execution_time: Duration,
    /// The sidecar's result metadata, as sent.
    pub metadata: Vec<u8>,
}

/// Whether an error is worth another try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: the same call may succeed later.
    Retryable,
    /// The same call would fail the same way.
    Permanent,
}

/// A task's status as the sidecar reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SidecarStatus {
    /// Accepted, not started.
    Pending,
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished without one.
    Failed,
    /// Stopped on request; its memory is freed.
    Cancelled,
}

impl SidecarStatus {
    /// The wire name (`GetTaskStatusResponse.status`).
    pub const fn as_str(self) -> &'static str {
        match self {
            SidecarStatus::Pending => "pending",
            SidecarStatus::Queued => "queued",
            SidecarStatus::Running => "running",
            SidecarStatus::Completed => "completed",
            SidecarStatus::Failed => "failed",
            SidecarStatus::Cancelled => "cancelled",
        }
    }

    /// True once the task has ended on the sidecar.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            SidecarStatus::Completed | SidecarStatus::Failed | SidecarStatus::Cancelled
        )
    }

    /// Every status.
    pub const ALL: [SidecarStatus; 6] = [
        SidecarStatus::Pending,
        SidecarStatus::Queued,
        SidecarStatus::Running,
        SidecarStatus::Completed,
        SidecarStatus::Failed,
        SidecarStatus::Cancelled,
    ];
}

impl FromStr for SidecarStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SidecarStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

/// A task's progress on the sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskProgress {
    /// Its status.
    pub status: SidecarStatus,
    /// Fraction done, 0–1.
    pub progress: f32,
    /// What it is doing.
    pub stage: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The sidecar's estimate of the time left.
    pub eta: Option<Duration>,
}

/// What a cancel achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CancelOutcome {
    /// The task was running when the cancel arrived.
    pub was_running: bool,
    /// Its status once it stopped (`None`: the sidecar does not know the task,
    /// so nothing of it runs).
    pub final_status: Option<SidecarStatus>,
}

/// A model the sidecar can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCapability {
    /// The lanes it serves.
    pub lanes: Vec<Lane>,
    /// Whether its output is deterministic.
    pub deterministic: bool,
    /// Its declared worst-case latency.
    pub max_latency_ms: u32,
    /// The VRAM it needs.
    pub vram_required_mb: u32,
    /// Its load state (`hot`, `warm`, …) if the sidecar reports it loaded.
    pub loaded: Option<String>,
}

/// The models a sidecar can serve (`ListPlugins` and `GetLoadedModels`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// By model id.
    pub models: BTreeMap<ModelId, ModelCapability>,
    /// Entries the sidecar reported that were not usable, and why.
    pub rejected: Vec<String>,
}

impl Capabilities {
    /// True when the sidecar can run `model` on `lane`.
    pub fn serves(&self, model: &ModelId, lane: Lane) -> bool {
        self.models
            .get(model)
            .is_some_and(|m| m.lanes.contains(&lane))
    }
}

/// The sidecar's health report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Whether it says it is healthy.
    pub healthy: bool,
    /// Its status text.
    pub status: String,
    /// How long it has been up.
    pub uptime: Duration,
}

/// Why a sidecar call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutionError {
    /// The sidecar ran the task and reports it failed (body-level failure).
    #[error("task {task_id}: model failed: {message}")]
    Model {
        /// The task.
        task_id: TaskId,
        /// The sidecar's `error_message`.
        message: String,
    },
    /// The sidecar reported success with an output CID that is not a CID.
    #[error("task {task_id}: sidecar returned an invalid output CID: {reason}")]
    InvalidOutput {
        /// The task.
        task_id: TaskId,
        /// Why the CID was rejected.
        reason: CidError,
    },
    /// Our deadline for the call passed.
    #[error("task {task_id}: no answer from the sidecar within {after:?}")]
    TimedOut {
        /// The task.
        task_id: TaskId,
        /// The deadline.
        after: Duration,
    },
    /// The call failed with a gRPC status.
    #[error("sidecar call failed: {code:?}: {message}")]
    Rpc {
        /// The task, if the call was about one.
        task_id: Option<TaskId>,
        /// The status code.
        code: Code,
        /// The status message.
        message: String,
    },
    /// The connection to the sidecar failed or broke.
    #[error("sidecar connection failed: {message}")]
    Transport {
        /// The task, if the call was about one.
        task_id: Option<TaskId>,
        /// What broke.
        message: String,
    },
    /// The sidecar does not know the task.
    #[error("sidecar does not know task {task_id}")]
    UnknownTask {
        /// The task.
        task_id: TaskId,
    },
    /// The sidecar's status report does not make sense.
    #[error("task {task_id}: sidecar sent a bad status report: {reason}")]
    BadReport {
        /// The task.
        task_id: TaskId,
        /// What was wrong.
        reason: String,
    },
    /// The sidecar refused to cancel a task that is still running.
    #[error("task {task_id}: sidecar refused to cancel: {message}")]
    CancelRefused {
        /// The task.
        task_id: TaskId,
        /// The sidecar's `error_message`.
        message: String,
    },
    /// The sidecar did not report the task stopped within the wait.
    #[error("task {task_id}: not confirmed cancelled within {waited:?} (last status {last})")]
    CancelUnconfirmed {
        /// The task.
        task_id: TaskId,
        /// How long we waited.
        waited: Duration,
        /// The last status seen.
        last: SidecarStatus,
    },
}

impl ExecutionError {
    /// Whether trying again may help.
    pub fn class(&self) -> ErrorClass {
        match self {
            ExecutionError::Rpc {
                code: Code::Unavailable | Code::ResourceExhausted | Code::Aborted,
                ..
            } => ErrorClass::Retryable,
            ExecutionError::TimedOut { .. } | ExecutionError::Transport { .. } => {
                ErrorClass::Retryable
            }
            _ => ErrorClass::Permanent,
        }
    }

    /// True when [`class`](Self::class) is `Retryable`.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// The task the error is about, if any.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            ExecutionError::Model { task_id, .. }
            | ExecutionError::InvalidOutput { task_id, .. }
            | ExecutionError::TimedOut { task_id, .. }
            | ExecutionError::UnknownTask { task_id }
            | ExecutionError::BadReport { task_id, .. }
            | ExecutionError::CancelRefused { task_id, .. }
            | ExecutionError::CancelUnconfirmed { task_id, .. } => Some(*task_id),
            ExecutionError::Rpc { task_id, .. } | ExecutionError::Transport { task_id, .. } => {
                *task_id
            }
        }
    }

    /// Maps a gRPC status. A status caused by a broken or refused connection
    /// becomes [`Transport`](Self::Transport).
    fn from_status(task_id: Option<TaskId>, status: tonic::Status) -> Self {
        if let Some(message) = transport_cause(&status) {
            return ExecutionError::Transport { task_id, message };
        }
        match (status.code(), task_id) {
            (Code::NotFound, Some(task_id)) => ExecutionError::UnknownTask { task_id },
            (code, _) => ExecutionError::Rpc {
                task_id,
                code,
                message: status.message().to_owned(),
            },
        }
    }

    fn from_transport(task_id: Option<TaskId>, e: &tonic::transport::Error) -> Self {
        ExecutionError::Transport {
            task_id,
            message: error_chain(e),
        }
    }
}

/// The message of a transport-level cause behind a status (a connection
/// refused, reset or closed), if there is one.
fn transport_cause(status: &tonic::Status) -> Option<String> {
    let mut cause: Option<&(dyn StdError + 'static)> = status.source();
    let mut transport = false;
    while let Some(e) = cause {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            transport = true;
        }
        // hyper and h2 errors are not types of ours to name; their text is
        // stable enough to report, and their presence means the transport failed.
        let name = std::any::type_name_of_val(e);
        if name.contains("hyper") || name.contains("h2") {
            transport = true;
        }
        cause = e.source();
    }
    if transport || (status.code() == Code::Unavailable && status.source().is_some()) {
        return Some(match status.source() {
            Some(src) => error_chain(src),
            None => status.message().to_owned(),
        });
    }
    None
}

fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cause = c.source();
    }
    out
}

/// A client of one sidecar. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct SidecarClient {
    channel: Channel,
    config: Arc<SidecarConfig>,
}

impl SidecarClient {
    /// A client that connects on first use (and reconnects after failures).
    pub fn connect_lazy(config: SidecarConfig) -> Result<Self, SidecarConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SidecarConfigError::NoRuntime);
        }
        let invalid = |reason: String| SidecarConfigError::InvalidEndpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let mut endpoint =
            Endpoint::from_shared(config.endpoint.clone()).map_err(|e| invalid(error_chain(&e)))?;
        match endpoint.uri().scheme_str() {
            Some("http" | "https") => {}
            other => {
                return Err(invalid(format!(
                    "scheme must be http or https, not {other:?}"
                )));
            }
        }
        endpoint = endpoint
            .connect_timeout(config.connect_timeout)
            .keep_alive_timeout(config.keep_alive_timeout)
            .tcp_nodelay(true);
        if let Some(interval) = config.keep_alive_interval {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_while_idle(true);
        }
        if let Some(tls) = &config.tls {
            endpoint = apply_tls(endpoint, tls)?;
        }
        Ok(SidecarClient {
            channel: endpoint.connect_lazy(),
            config: Arc::new(config),
        })
    }

    /// The client's configuration.
    pub fn config(&self) -> &SidecarConfig {
        &self.config
    }

    /// The `ExecuteTask` service.
    pub fn execute(&self) -> Execute {
        Execute {
            channel: self.channel.clone(),
            grace: self.config.timeout_grace,
        }
    }

    fn grpc(&self) -> Grpc<Channel> {
        Grpc::new(self.channel.clone())
    }

    /// A task's status and progress.
    pub async fn status(&self, task_id: TaskId) -> Result<TaskProgress, ExecutionError> {
        let r = self
            .grpc()
            .get_task_status(proto::GetTaskStatusRequest {
                task_id: task_id.to_string(),
            })
            .await
            .map_err(|s| ExecutionError::from_status(Some(task_id), s))?
            .into_inner();
        let bad = |reason: String| ExecutionError::BadReport { task_id, reason };
        let status: SidecarStatus = r.status.parse().map_err(bad)?;
        if !(0.0..=1.0).contains(&r.progress) {
            return Err(bad(format!("progress {} is outside 0–1", r.progress)));
        }
        Ok(TaskProgress {
            status,
            progress: r.progress,
            stage: r.current_stage,
            error: (!r.error_message.is_empty()).then_some(r.error_message),
            eta: (r.eta_ms > 0).then(|| Duration::from_millis(r.eta_ms)),
        })
    }

    /// Asks the sidecar to cancel a task and waits until it reports the task
    /// stopped (`cancelled`, or another final status if it ended first), at
    /// most [`SidecarConfig::cancel_wait`].
    pub async fn cancel(
        &self,
        task_id: TaskId,
        reason: &str,
    ) -> Result<CancelOutcome, ExecutionError> {
        let r = match self
            .grpc()
            .cancel_task(proto::CancelTaskRequest {
                task_id: task_id.to_string(),
                reason: reason.to_owned(),
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => match ExecutionError::from_status(Some(task_id), s) {
                ExecutionError::UnknownTask { .. } => {
                    return Ok(CancelOutcome {
                        was_running: false,
                        final_status: None,
                    });
                }
                e => return Err(e),
            },
        };
        let was_running = r.was_running;
        let started = Instant::now();
        let wait = self.config.cancel_wait;
        let mut pause = Duration::from_millis(2);
        loop {
            let status = match self.status(task_id).await {
                Ok(p) => p.status,
                Err(ExecutionError::UnknownTask { .. }) if !r.success => {
                    return Ok(CancelOutcome {
                        was_running: false,
                        final_status: None,
                    });
                }
                Err(e) => return Err(e),
            };
            if status.is_final() {
                return Ok(CancelOutcome {
                    was_running,
                    final_status: Some(status),
                });
            }
            if !r.success {
                return Err(ExecutionError::CancelRefused {
                    task_id,
                    message: r.error_message,
                });
            }
            if started.elapsed() >= wait {
                return Err(ExecutionError::CancelUnconfirmed {
                    task_id,
                    waited: started.elapsed(),
                    last: status,
                });
            }
            // The interface has no status stream: ask again, backing off.
            tokio::time::sleep(pause.min(wait.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// The models the sidecar can serve, from `ListPlugins` and `GetLoadedModels`.
    pub async fn capabilities(&self) -> Result<Capabilities, ExecutionError> {
        let mut grpc = self.grpc();
        let plugins = grpc
            .list_plugins(proto::ListPluginsRequest {
                lane: String::new(),
            })
            .await
            .map_err(|s| ExecutionError::from_status(None, s))?
            .into_inner()
            .plugins;
        let loaded = grpc
            .get_loaded_models(proto::GetLoadedModelsRequest {
                container_id: String::new(),
            })
            .await
            .map_err(|s| ExecutionError::from_status(None, s))?
            .into_inner()
            .models;
        let mut caps = Capabilities::default();
        for p in plugins {
            let id = match ModelId::new(&p.name) {
                Ok(id) => id,
                Err(e) => {
                    caps.rejected.push(format!("plugin {:?}: {e}", p.name));
                    continue;
                }
            };
            let mut lanes = Vec::new();
            for l in &p.supported_lanes {
                match l.parse::<Lane>() {
                    Ok(lane) if !lanes.contains(&lane) => lanes.push(lane),
                    Ok(_) => {}
                    Err(e) => caps.rejected.push(format!("plugin {:?}: {e}", p.name)),
                }
            }
            caps.models.insert(
                id,
                ModelCapability {
                    lanes,
                    deterministic: p.deterministic,
                    max_latency_ms: p.max_latency_ms,
                    vram_required_mb: p.vram_required_mb,
                    loaded: None,
                },
            );
        }
        for m in loaded {
            let Ok(id) = ModelId::new(&m.model_id) else {
                caps.rejected
                    .push(format!("loaded model {:?}: not a model id", m.model_id));
                continue;
            };
            match caps.models.get_mut(&id) {
                Some(cap) => cap.loaded = Some(m.state),
                None => caps.rejected.push(format!(
                    "loaded model {:?} is not a listed plugin",
                    m.model_id
                )),
            }
        }
        Ok(caps)
    }

    /// The sidecar's `HealthCheck`.
    pub async fn health(&self) -> Result<Health, ExecutionError> {
        let r = self
            .grpc()
            .health_check(proto::HealthCheckRequest {
                container_id: String::new(),
                include_metrics: false,
            })
            .await
            .map_err(|s| ExecutionError::from_status(None, s))?
            .into_inner();
        Ok(Health {
            healthy: r.healthy,
            status: r.status,
            uptime: Duration::from_secs(r.uptime_seconds),
        })
    }
}

#[cfg(feature = "tls")]
fn apply_tls(endpoint: Endpoint, tls: &TlsConfig) -> Result<Endpoint, SidecarConfigError> {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_certificate_pem));
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|e| SidecarConfigError::Tls(error_chain(&e)))
}

#[cfg(not(feature = "tls"))]
fn apply_tls(_: Endpoint, _: &TlsConfig) -> Result<Endpoint, SidecarConfigError> {
    Err(SidecarConfigError::TlsUnavailable)
}

/// `ExecuteTask` as a `tower::Service<ExecuteRequest>`.
///
/// Readiness is the channel's: `poll_ready` reserves a slot in the
/// connection's request buffer, and `call` spends it (the ready channel moves
/// into the call; a fresh clone stays behind).
#[derive(Clone, Debug)]
pub struct Execute {
    channel: Channel,
    grace: Duration,
}

/// The future of an `ExecuteTask` call.
pub type ExecuteFuture =
    Pin<Box<dyn Future<Output = Result<ExecutionResult, ExecutionError>> + Send + 'static>>;

impl tower::Service<ExecuteRequest> for Execute {
    type Response = ExecutionResult;
    type Error = ExecutionError;
    type Future = ExecuteFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<tonic::codegen::http::Request<tonic::body::Body>>::poll_ready(
            &mut self.channel,
            cx,
        )
        .map_err(|e| ExecutionError::from_transport(None, &e))
    }

    fn call(&mut self, req: ExecuteRequest) -> Self::Future {
        let fresh = self.channel.clone();
        let ready = std::mem::replace(&mut self.channel, fresh);
        Box::pin(execute(ready, req, self.grace))
    }
}

async fn execute(
    channel: Channel,
    req: ExecuteRequest,
    grace: Duration,
) -> Result<ExecutionResult, ExecutionError> {
    let task_id = req.task_id;
    let timeout_ms = req
        .timeout
        .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let deadline = req.timeout.map(|t| t.saturating_add(grace));
    let mut request = tonic::Request::new(proto::ExecuteTaskRequest {
        task_id: task_id.to_string(),
        model_id: req.model.as_str().to_owned(),
        input_cid: req.input_cid.as_str().to_owned(),
        parameters: req.parameters.0,
        timeout_ms,
        callback_endpoint: String::new(),
        plugin_name: String::new(),
        lane: req.lane.index(),
    });
    if let Some(d) = deadline {
        request.set_timeout(d);
    }
    let mut grpc = Grpc::new(channel);
    let started = Instant::now();
    let call = grpc.execute_task(request);
    let result = match deadline {
        Some(d) => match tokio::time::timeout(d, call).await {
            Ok(r) => r,
            // Dropping the call resets the stream; the sidecar stops the run.
            Err(_) => return Err(ExecutionError::TimedOut { task_id, after: d }),
        },
        None => call.await,
    };
    let body = match result {
        Ok(r) => r.into_inner(),
        Err(status) => {
            // A CANCELLED status once the deadline we set has passed is our
            // timeout, enforced by the server from the grpc-timeout header.
            if let Some(after) = deadline
                && status.code() == Code::Cancelled
                && started.elapsed() >= after
            {
                return Err(ExecutionError::TimedOut { task_id, after });
            }
            return Err(ExecutionError::from_status(Some(task_id), status));
        }
    };
    if !body.success {
        return Err(ExecutionError::Model {
            task_id,
            message: body.error_message,
        });
    }
    let output_cid = Cid::parse(&body.output_cid)
        .map_err(|reason| ExecutionError::InvalidOutput { task_id, reason })?;
    Ok(ExecutionResult {
        task_id,
        output_cid,
        execution_time: Duration::from_millis(body.execution_time_ms),
        metadata: body.result_metadata,
    })
}

impl fmt::Display for SidecarStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let rpc = |code| ExecutionError::Rpc {
            task_id: None,
            code,
            message: String::new(),
        };
        for code in [Code::Unavailable, Code::ResourceExhausted, Code::Aborted] {
            assert!(rpc(code).is_retryable(), "{code:?}");
        }
        for code in [
            Code::Cancelled,
            Code::InvalidArgument,
            Code::Internal,
            Code::Unknown,
            Code::PermissionDenied,
            Code::Unimplemented,
            Code::AlreadyExists,
        ] {
            assert!(!rpc(code).is_retryable(), "{code:?}");
        }
        let t = TaskId(1);
        assert!(
            ExecutionError::TimedOut {
                task_id: t,
                after: Duration::ZERO
            }
            .is_retryable()
        );
        assert!(
            ExecutionError::Transport {
                task_id: None,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ExecutionError::Model {
                task_id: t,
                message: "x".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn parameters_must_be_json() {
        assert!(Parameters::from_bytes(b"{\"a\":1}".to_vec()).is_ok());
        assert!(Parameters::from_bytes(Vec::new()).is_ok());
        let err = Parameters::from_bytes(b"{oops".to_vec()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("task parameters are not valid JSON")
        );
    }

    #[test]
    fn status_names() {
        for s in [
            "pending",
            "queued",
            "running",
            "completed",
            "failed",
            "cancelled",
        ] {
            assert_eq!(s.parse::<SidecarStatus>().unwrap().to_string(), s);
        }
        assert!("done".parse::<SidecarStatus>().is_err());
    }

    #[tokio::test]
    async fn bad_endpoints_are_refused() {
        for bad in ["", "not a uri", "ftp://127.0.0.1:1", "127.0.0.1:50051"] {
            match SidecarClient::connect_lazy(SidecarConfig::new(bad)) {
                Err(SidecarConfigError::InvalidEndpoint { endpoint, .. }) => {
                    assert_eq!(endpoint, bad)
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn client_needs_a_runtime() {
        assert!(matches!(
            SidecarClient::connect_lazy(SidecarConfig::new("http://127.0.0.1:1")),
            Err(SidecarConfigError::NoRuntime)
        ));
    }
}
