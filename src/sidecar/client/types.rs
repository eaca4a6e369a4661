//! What goes to the sidecar and what comes back: requests, results,
//! statuses, capabilities, health.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::layer::{TaskRequest, TimeoutRequest};
use crate::task::{Cid, Lane, ModelId, RunId, Task, TaskId};

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

    /// The bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
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
    /// `timeout_ms`; the call's deadline adds [`SidecarConfig::timeout_grace`](super::SidecarConfig::timeout_grace).
    pub timeout: Option<Duration>,
    /// Which run attempt of the task this is (0 for the first): the
    /// sidecar sees it in the run id ([`RunId`]), which it never sees twice.
    pub attempt: u32,
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
            attempt: 0,
        }
    }

    /// The run id the sidecar sees.
    pub fn run(&self) -> RunId {
        RunId {
            task: self.task_id,
            attempt: self.attempt,
        }
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
    fn run_id(&self) -> RunId {
        self.run()
    }
}

impl TimeoutRequest for ExecuteRequest {
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    fn set_timeout(&mut self, limit: Duration) {
        self.timeout = Some(limit);
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

impl fmt::Display for SidecarStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
