//! The sidecar client: an [`Execute`] `tower::Service` for `ExecuteTask`, and
//! status, cancel, capability and health calls, over one lazily connected
//! tonic channel.
//!
//! Errors are typed ([`SidecarError`]) and classified ([`ErrorClass`](crate::layer::retry::ErrorClass)):
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
//!         attempt: 0,
//!     })
//!     .await?;
//! println!("{} in {:?}", output.output_cid, output.execution_time);
//! # Ok(()) }
//! ```
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use tower::BoxError;

use crate::layer::Canceller;
use crate::sidecar::proto;
use crate::sidecar::proto::sidecar_client::SidecarClient as Grpc;
use crate::task::{Lane, ModelId, RunId, TaskId};

mod config;
mod error;
mod execute;
mod types;

pub use config::{AuthToken, AuthTokenError, SidecarConfig, SidecarConfigError, TlsConfig};
pub use error::{
    ATTACH_HEADER, Blame, SETUP_FAULT_PREFIXES, SidecarError, TASK_FAULT_PREFIXES,
    VERDICT_CANCELLED, VERDICT_HEADER, blame_of_words, is_cancel_words,
};
pub use execute::{Execute, ExecuteFuture};
pub use types::{
    CancelOutcome, Capabilities, ExecuteRequest, ExecutionResult, Health, ModelCapability,
    Parameters, ParametersError, SidecarStatus, TaskProgress,
};

use error::error_chain;

/// Adds the node's credential to every call (tonic's interceptor).
#[derive(Clone, Debug, Default)]
pub struct Credential(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Credential {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The connection calls go over: the channel, with the credential added.
pub type Wire = tonic::service::interceptor::InterceptedService<Channel, Credential>;

/// A client of one sidecar. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct SidecarClient {
    channel: Wire,
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
        let credential = match &config.auth_token {
            Some(token) => Credential(Some(
                token
                    .bearer()
                    .parse()
                    .map_err(|_| SidecarConfigError::InvalidToken)?,
            )),
            None => Credential(None),
        };
        Ok(SidecarClient {
            channel: tonic::service::interceptor::InterceptedService::new(
                endpoint.connect_lazy(),
                credential,
            ),
            config: Arc::new(config),
        })
    }

    /// The client's configuration.
    pub fn config(&self) -> &SidecarConfig {
        &self.config
    }

    /// A [`Canceller`] for the stack's layers: `CancelTask`; then, unless
    /// the cancelled call's own answer came first (the layers wait for it,
    /// and drop this future when it does), after
    /// [`SidecarConfig::cancel_answer_wait`] the run's status until the
    /// sidecar reports it stopped. An answer the sidecar gave is a stop
    /// answer; a broken connection or no answer (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `UNKNOWN`) is not.
    pub fn canceller(&self) -> Canceller {
        let client = self.clone();
        Canceller::from_fn(move |id: RunId, reason| {
            let client = client.clone();
            async move {
                let poll_after = client.config.cancel_answer_wait;
                client
                    .cancel_polling_after(id, reason, poll_after)
                    .await
                    .map(|_| ())
                    .map_err(BoxError::from)
            }
        })
        .with_stop_answers(|error| {
            crate::layer::cause::<SidecarError>(error).is_some_and(|e| {
                !matches!(
                    e,
                    SidecarError::Transport { .. }
                        | SidecarError::TimedOut { .. }
                        | SidecarError::Rpc {
                            code: tonic::Code::Unavailable
                                | tonic::Code::DeadlineExceeded
                                | tonic::Code::Unknown,
                            ..
                        }
                )
            })
        })
    }

    /// The `ExecuteTask` service.
    pub fn execute(&self) -> Execute {
        Execute {
            channel: self.channel.clone(),
            grace: self.config.timeout_grace,
            attach: None,
        }
    }

    /// The `ExecuteTask` service that attaches to a run already going for
    /// the same task (the sidecar answers `ALREADY_EXISTS`, as after a
    /// restart of ours): it waits for that run to end, then asks again and
    /// takes its answer, instead of failing the task.
    pub fn execute_attaching(&self) -> Execute {
        Execute {
            attach: Some(self.clone()),
            ..self.execute()
        }
    }

    fn grpc(&self) -> Grpc<Wire> {
        Grpc::new(self.channel.clone())
    }

    /// Runs one call with a deadline of at most `limit`; no answer by then
    /// is `DEADLINE_EXCEEDED`.
    async fn bounded<T>(
        &self,
        task_id: Option<TaskId>,
        limit: Duration,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, SidecarError> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(SidecarError::from_status(task_id, s)),
            Err(_) => Err(SidecarError::Rpc {
                task_id,
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer from the sidecar within {limit:?}"),
            }),
        }
    }

    /// A run's status and progress (a task id names its first run).
    pub async fn status(&self, run: impl Into<RunId>) -> Result<TaskProgress, SidecarError> {
        self.status_within(run.into(), self.config.call_timeout)
            .await
    }

    async fn status_within(
        &self,
        run: RunId,
        limit: Duration,
    ) -> Result<TaskProgress, SidecarError> {
        let task_id = run.task;
        let mut grpc = self.grpc();
        let r = self
            .bounded(
                Some(task_id),
                limit,
                grpc.get_task_status(proto::GetTaskStatusRequest {
                    task_id: run.to_string(),
                }),
            )
            .await?;
        progress_of(task_id, r)
    }

    /// Waits until the sidecar reports the task's run ended (at most
    /// `limit`, if given), asking for its status with growing pauses.
    pub async fn wait_ended(
        &self,
        run: impl Into<RunId>,
        limit: Option<Duration>,
    ) -> Result<SidecarStatus, SidecarError> {
        let run = run.into();
        let task_id = run.task;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match self.status(run).await {
                Ok(p) if p.status.is_final() => return Ok(p.status),
                Ok(_) => {}
                // Gone from the sidecar's records: nothing of it runs.
                Err(SidecarError::UnknownTask { .. }) => return Ok(SidecarStatus::Cancelled),
                Err(e) => return Err(e),
            }
            if let Some(limit) = limit
                && started.elapsed() >= limit
            {
                return Err(SidecarError::TimedOut {
                    task_id,
                    after: limit,
                });
            }
            // The interface has no status stream: ask again, backing off.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Asks the sidecar to cancel a task and waits until it reports the task
    /// stopped (`cancelled`, or another final status if it ended first), at
    /// most [`SidecarConfig::cancel_wait`] in all: a sidecar that does not
    /// answer leaves the cancel unconfirmed, not pending.
    pub async fn cancel(
        &self,
        run: impl Into<RunId>,
        reason: &str,
    ) -> Result<CancelOutcome, SidecarError> {
        self.cancel_polling_after(run.into(), reason, Duration::ZERO)
            .await
    }

    /// [`cancel`](Self::cancel), with the status first asked `poll_after`
    /// the sidecar took the cancel.
    async fn cancel_polling_after(
        &self,
        run: RunId,
        reason: &str,
        poll_after: Duration,
    ) -> Result<CancelOutcome, SidecarError> {
        let task_id = run.task;
        let started = Instant::now();
        let wait = self.config.cancel_wait;
        let left = || {
            wait.saturating_sub(started.elapsed())
                .min(self.config.call_timeout)
        };
        let mut grpc = self.grpc();
        let asked = self
            .bounded(
                Some(task_id),
                left(),
                grpc.cancel_task(proto::CancelTaskRequest {
                    task_id: run.to_string(),
                    reason: reason.to_owned(),
                }),
            )
            .await;
        let r = match asked {
            Ok(r) => r,
            Err(SidecarError::Rpc {
                code: tonic::Code::DeadlineExceeded,
                ..
            }) => {
                return Err(SidecarError::CancelUnconfirmed {
                    task_id,
                    waited: started.elapsed(),
                    last: SidecarStatus::Running,
                });
            }
            Err(e) => match e {
                SidecarError::UnknownTask { .. } => {
                    return Ok(CancelOutcome {
                        was_running: false,
                        final_status: None,
                    });
                }
                e => return Err(e),
            },
        };
        let was_running = r.was_running;
        if r.success && !poll_after.is_zero() {
            tokio::time::sleep(poll_after.min(wait.saturating_sub(started.elapsed()))).await;
        }
        let mut pause = Duration::from_millis(2);
        let mut last = SidecarStatus::Running;
        loop {
            if started.elapsed() >= wait {
                return Err(SidecarError::CancelUnconfirmed {
                    task_id,
                    waited: started.elapsed(),
                    last,
                });
            }
            let status = match self.status_within(run, left()).await {
                Ok(p) => p.status,
                Err(SidecarError::Rpc {
                    code: tonic::Code::DeadlineExceeded,
                    ..
                }) => continue,
                Err(SidecarError::UnknownTask { .. }) if !r.success => {
                    return Ok(CancelOutcome {
                        was_running: false,
                        final_status: None,
                    });
                }
                Err(e) => return Err(e),
            };
            last = status;
            if status.is_final() {
                return Ok(CancelOutcome {
                    was_running,
                    final_status: Some(status),
                });
            }
            if !r.success {
                return Err(SidecarError::CancelRefused {
                    task_id,
                    message: r.error_message,
                });
            }
            if started.elapsed() >= wait {
                return Err(SidecarError::CancelUnconfirmed {
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
    pub async fn capabilities(&self) -> Result<Capabilities, SidecarError> {
        let mut grpc = self.grpc();
        let limit = self.config.call_timeout;
        let plugins = self
            .bounded(
                None,
                limit,
                grpc.list_plugins(proto::ListPluginsRequest {
                    lane: String::new(),
                }),
            )
            .await?
            .plugins;
        let loaded = self
            .bounded(
                None,
                limit,
                grpc.get_loaded_models(proto::GetLoadedModelsRequest {
                    container_id: String::new(),
                }),
            )
            .await?
            .models;
        Ok(capabilities_of(plugins, loaded))
    }

    /// The sidecar's `HealthCheck`.
    pub async fn health(&self) -> Result<Health, SidecarError> {
        let mut grpc = self.grpc();
        let r = self
            .bounded(
                None,
                self.config.call_timeout,
                grpc.health_check(proto::HealthCheckRequest {
                    container_id: String::new(),
                    include_metrics: false,
                }),
            )
            .await?;
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

/// What a `GetTaskStatus` answer says, checked: a status the interface
/// names and a progress within 0–1.
pub(crate) fn progress_of(
    task_id: TaskId,
    r: proto::GetTaskStatusResponse,
) -> Result<TaskProgress, SidecarError> {
    let bad = |reason: String| SidecarError::BadReport { task_id, reason };
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

/// The models a sidecar can serve, from its `ListPlugins` and
/// `GetLoadedModels` answers; entries that do not make sense are set aside
/// in `rejected`, with what was wrong.
pub(crate) fn capabilities_of(
    plugins: Vec<proto::PluginInfo>,
    loaded: Vec<proto::LoadedModel>,
) -> Capabilities {
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
    caps
}

/// The sidecar's answers with arbitrary fields, and arbitrary bytes on the
/// wire: each is decoded and checked into a result or a typed error,
/// never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,40}",
            Just(String::new()),
            Just("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku".to_owned()),
            Just("completed".to_owned()),
            Just("sha256".to_owned()),
            Just("lane1".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn execute_answers(
            success in any::<bool>(),
            error_message in text(),
            output_cid in text(),
            execution_time_ms in any::<u64>(),
            result_metadata in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let body = proto::ExecuteTaskResponse {
                success, error_message: error_message.clone(), output_cid: output_cid.clone(),
                execution_time_ms, result_metadata,
            };
            match execute::result_of(TaskId(1), body, None) {
                Ok(r) => {
                    prop_assert!(success);
                    prop_assert_eq!(r.output_cid.as_str(), output_cid.as_str());
                }
                Err(SidecarError::Model { message, blame, .. }) => {
                    prop_assert!(!success);
                    // Words alone never blame the model.
                    prop_assert_ne!(blame, Blame::Model);
                    prop_assert_eq!(message, error_message);
                }
                Err(SidecarError::Cancelled { message, .. }) => {
                    prop_assert!(!success);
                    prop_assert!(is_cancel_words(&message));
                }
                Err(SidecarError::InvalidOutput { .. }) => prop_assert!(success),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }

        #[test]
        fn status_answers(
            status in text(),
            progress in any::<f32>(),
            error_message in text(),
            current_stage in text(),
            eta_ms in any::<u64>(),
        ) {
            let r = proto::GetTaskStatusResponse { status, progress, error_message, current_stage, eta_ms };
            match progress_of(TaskId(1), r) {
                Ok(p) => prop_assert!((0.0..=1.0).contains(&p.progress)),
                Err(e) => prop_assert!(matches!(e, SidecarError::BadReport { .. }), "{e:?}"),
            }
        }

        #[test]
        fn capability_answers(
            plugins in proptest::collection::vec(
                (text(), proptest::collection::vec(text(), 0..3), any::<bool>(), any::<u32>(), any::<u32>()),
                0..5,
            ),
            loaded in proptest::collection::vec((text(), text()), 0..5),
        ) {
            let plugins: Vec<proto::PluginInfo> = plugins.into_iter().map(|(name, supported_lanes, deterministic, max_latency_ms, vram_required_mb)| proto::PluginInfo {
                name, version: String::new(), supported_lanes, deterministic, max_latency_ms, vram_required_mb,
            }).collect();
            let loaded: Vec<proto::LoadedModel> = loaded.into_iter().map(|(model_id, state)| proto::LoadedModel {
                model_id, state, ..proto::LoadedModel::default()
            }).collect();
            let caps = capabilities_of(plugins.clone(), loaded.clone());
            // Every entry is taken or set aside with a reason naming it (a
            // plugin with a bad lane is taken for the lanes it names well).
            for p in &plugins {
                match ModelId::new(&p.name) {
                    Ok(id) => prop_assert!(caps.models.contains_key(&id)),
                    Err(_) => {
                        let named = format!("{:?}", p.name);
                        let set_aside = caps.rejected.iter().any(|r| r.contains(&named));
                        prop_assert!(set_aside, "{} not in {:?}", named, caps.rejected);
                    }
                }
            }
            for m in &loaded {
                let attached = ModelId::new(&m.model_id)
                    .ok()
                    .and_then(|id| caps.models.get(&id))
                    .is_some_and(|cap| cap.loaded.is_some());
                let named = format!("{:?}", m.model_id);
                let set_aside = caps.rejected.iter().any(|r| r.contains(&named));
                prop_assert!(attached || set_aside, "{} not in {:?}", named, caps.rejected);
            }
            for (id, cap) in &caps.models {
                prop_assert!(ModelId::new(id.as_str()).is_ok());
                let mut lanes = cap.lanes.clone();
                lanes.dedup();
                prop_assert_eq!(lanes.len(), cap.lanes.len());
            }
        }

        #[test]
        fn answers_from_arbitrary_wire_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(body) = proto::ExecuteTaskResponse::decode(&bytes[..]) {
                let _ = execute::result_of(TaskId(1), body, None);
            }
            if let Ok(r) = proto::GetTaskStatusResponse::decode(&bytes[..]) {
                let _ = progress_of(TaskId(1), r);
            }
            if let Ok(r) = proto::ListPluginsResponse::decode(&bytes[..]) {
                let _ = capabilities_of(r.plugins, Vec::new());
            }
            if let Ok(r) = proto::GetLoadedModelsResponse::decode(&bytes[..]) {
                let _ = capabilities_of(Vec::new(), r.models);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn classification() {
        let rpc = |code| SidecarError::Rpc {
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
            SidecarError::TimedOut {
                task_id: t,
                after: Duration::ZERO
            }
            .is_retryable()
        );
        assert!(
            SidecarError::Transport {
                task_id: None,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !SidecarError::Model {
                task_id: t,
                message: "x".into(),
                blame: Blame::Model,
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
