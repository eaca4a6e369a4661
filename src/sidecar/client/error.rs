//! Why a sidecar call failed, and how that is classified.

use std::error::Error as StdError;
use std::time::Duration;

use tonic::Code;

use super::SidecarStatus;
use crate::layer::cause;
use crate::layer::retry::ErrorClass;
use crate::task::{CidError, RunId, TaskId};

/// Who a failed run is the fault of, as the sidecar's answer shows it.
///
/// Only [`Blame::Model`] can cost the node its stake, and only the sidecar
/// can say it, positively: a structured verdict ([`VERDICT_HEADER`]) from a
/// sidecar that gives one. Words are read only to find the task's fault or
/// the set-up's; words the node does not know are [`Blame::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Blame {
    /// The model failed on a valid input (the sidecar's positive verdict):
    /// `ExecutorFailed`.
    Model,
    /// The task's own input, parameters or model (one nobody serves here):
    /// `InvalidInput`, which does not slash.
    Task,
    /// The task's time limit passed at the sidecar: `DeadlineExceeded`.
    Time,
    /// The node's own set-up — a plugin runner not configured, a policy,
    /// VRAM, an unhealthy container, a request the sidecar finds malformed:
    /// never the task's, never reported as a slashing reason. Held.
    Setup,
    /// Words or codes the node does not know: held, never slashing.
    Unknown,
}

impl Blame {
    /// A short name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Model => "model",
            Blame::Task => "task",
            Blame::Time => "time",
            Blame::Setup => "setup",
            Blame::Unknown => "unknown",
        }
    }

    /// The blame a sidecar's [`VERDICT_HEADER`] value gives, if it is one.
    pub fn from_verdict(value: &str) -> Option<Blame> {
        Some(match value {
            "model-failed" => Blame::Model,
            "task-invalid" => Blame::Task,
            "timed-out" => Blame::Time,
            "setup" => Blame::Setup,
            _ => return None,
        })
    }

    /// The [`VERDICT_HEADER`] value a sidecar sends for this blame.
    pub fn verdict(self) -> &'static str {
        match self {
            Blame::Model => "model-failed",
            Blame::Task => "task-invalid",
            Blame::Time => "timed-out",
            Blame::Setup => "setup",
            Blame::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Blame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The response metadata key in which a sidecar gives its structured
/// verdict on a failed run (`model-failed`, `task-invalid`, `timed-out`,
/// `setup`, `cancelled`). It rides beside the wire-compatible body: a
/// sidecar that does not send it is read by its words, and never believed
/// to say "the model failed".
pub const VERDICT_HEADER: &str = "nsn-verdict";

/// The verdict value for a run stopped by a cancel.
pub const VERDICT_CANCELLED: &str = "cancelled";

/// The metadata key with which a sidecar says that an `ALREADY_EXISTS`
/// refusal is for this very request, still running, and that asking again
/// once it ends gives its answer (value `same-request`). Without it a
/// known run id is spent: the node runs a new attempt.
pub const ATTACH_HEADER: &str = "nsn-attach";

/// Why a sidecar call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// The sidecar ran the task and reports it failed (body-level failure),
    /// with whose fault it is as its answer shows it.
    #[error("task {task_id}: run failed ({blame}): {message}")]
    Model {
        /// The task.
        task_id: TaskId,
        /// The sidecar's `error_message`.
        message: String,
        /// Whose fault it is, from the sidecar's verdict or its words.
        blame: Blame,
    },
    /// The sidecar reports the run stopped by a cancel (in the body or as
    /// `CANCELLED`). A cancel the node asks for never reaches the node as
    /// this (its layers report their own): this one came from elsewhere.
    #[error("task {task_id}: the sidecar says the run was cancelled: {message}")]
    Cancelled {
        /// The task.
        task_id: TaskId,
        /// What the sidecar said.
        message: String,
    },
    /// The sidecar refused the run id as known (`ALREADY_EXISTS`) and will
    /// not give this request's answer under it: the id is spent.
    #[error("run {run}: the sidecar knows this run id already: {message}")]
    RunIdTaken {
        /// The run id.
        run: RunId,
        /// What the sidecar said.
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

/// Body failures whose words blame the task itself — its model, input or
/// parameters — in the reference sidecar's wording (for versions that send
/// no verdict) and in NSN's (`Invalid request: …`). Words never make a
/// failure the model's.
pub const TASK_FAULT_PREFIXES: &[&str] = &[
    "unknown model",
    "unsupported lane",
    "invalid input",
    "invalid parameters",
    "not found:",
    "Invalid request:",
];

/// Failures whose words blame the node's set-up, in NSN's sidecar's
/// wording: a plugin runner that is not configured, a sandbox policy,
/// containers, VRAM, its own internal errors.
pub const SETUP_FAULT_PREFIXES: &[&str] = &[
    "Plugin policy violation: untrusted plugins",
    "Task execution failed: plugin runner not configured",
    "Task execution failed: plugin runner command is empty",
    "Task execution failed: non-plugin execution is not supported",
    "Plugin registry is disabled",
    "Container is unhealthy",
    "Container limit reached",
    "Insufficient VRAM",
    "Internal error",
    "Plugin registry error",
];

/// Who a body failure blames, by its words alone (no verdict was sent).
pub fn blame_of_words(message: &str) -> Blame {
    if SETUP_FAULT_PREFIXES.iter().any(|p| message.starts_with(p)) {
        Blame::Setup
    } else if TASK_FAULT_PREFIXES.iter().any(|p| message.starts_with(p)) {
        Blame::Task
    } else {
        Blame::Unknown
    }
}

/// True for the words with which a sidecar reports a run stopped by a
/// cancel: the reference sidecar's `cancelled`, NSN's `Cancelled: <reason>`
/// and `Task was cancelled: <id>`.
pub fn is_cancel_words(message: &str) -> bool {
    message == "cancelled"
        || message.starts_with("Cancelled:")
        || message.starts_with("Task was cancelled")
}

impl SidecarError {
    /// Who the failure blames: a body failure's own [`Blame`]; for a refused
    /// call, NSN's codes and words (a plugin nobody has, or a lane it does
    /// not serve: the task; its own run timeout: time; policy, VRAM,
    /// containers, internal errors, requests it finds malformed: the
    /// set-up); an output that is not a CID: the set-up. `None` for what is
    /// no verdict on the run (no answer, a broken connection, a cancel, a
    /// spent id, a busy sidecar).
    pub fn blame(&self) -> Option<Blame> {
        match self {
            SidecarError::Model { blame, .. } => Some(*blame),
            SidecarError::InvalidOutput { .. } => Some(Blame::Setup),
            SidecarError::Rpc { code, message, .. } => match code {
                Code::NotFound if message.starts_with("Plugin not found") => Some(Blame::Task),
                Code::FailedPrecondition
                    if message.starts_with("Plugin policy violation: plugin")
                        && message.contains("does not support lane") =>
                {
                    Some(Blame::Task)
                }
                Code::DeadlineExceeded if message.starts_with("Task ") => Some(Blame::Time),
                Code::ResourceExhausted => {
                    (blame_of_words(message) == Blame::Setup).then_some(Blame::Setup)
                }
                Code::FailedPrecondition
                | Code::Internal
                | Code::InvalidArgument
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::Unimplemented
                | Code::Unknown
                | Code::DataLoss => Some(Blame::Setup),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether trying again may help.
    pub fn class(&self) -> ErrorClass {
        match self {
            SidecarError::Rpc {
                code: Code::Unavailable | Code::ResourceExhausted | Code::Aborted,
                ..
            } => ErrorClass::Retryable,
            SidecarError::TimedOut { .. } | SidecarError::Transport { .. } => ErrorClass::Retryable,
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
            SidecarError::Model { task_id, .. }
            | SidecarError::Cancelled { task_id, .. }
            | SidecarError::InvalidOutput { task_id, .. }
            | SidecarError::TimedOut { task_id, .. }
            | SidecarError::UnknownTask { task_id }
            | SidecarError::BadReport { task_id, .. }
            | SidecarError::CancelRefused { task_id, .. }
            | SidecarError::CancelUnconfirmed { task_id, .. } => Some(*task_id),
            SidecarError::RunIdTaken { run, .. } => Some(run.task),
            SidecarError::Rpc { task_id, .. } | SidecarError::Transport { task_id, .. } => *task_id,
        }
    }

    /// Maps a gRPC status. A status caused by a broken or refused connection
    /// becomes [`Transport`](Self::Transport).
    pub(super) fn from_status(task_id: Option<TaskId>, status: tonic::Status) -> Self {
        if let Some(message) = transport_cause(&status) {
            return SidecarError::Transport { task_id, message };
        }
        match (status.code(), task_id) {
            (Code::NotFound, Some(task_id)) => SidecarError::UnknownTask { task_id },
            (code, _) => SidecarError::Rpc {
                task_id,
                code,
                message: status.message().to_owned(),
            },
        }
    }

    pub(super) fn from_transport(task_id: Option<TaskId>, e: &tonic::transport::Error) -> Self {
        SidecarError::Transport {
            task_id,
            message: error_chain(e),
        }
    }
}

/// The message of a transport-level cause behind a status (a connection
/// refused, reset or closed), if there is one.
fn transport_cause(status: &tonic::Status) -> Option<String> {
    let source = status.source()?;
    let transport = cause::<tonic::transport::Error>(source).is_some()
        || cause::<std::io::Error>(source).is_some()
        || status.code() == Code::Unavailable;
    transport.then(|| error_chain(source))
}

pub(super) fn error_chain(e: &dyn StdError) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(message: &str) -> Blame {
        blame_of_words(message)
    }

    fn status(code: Code, message: &str) -> Option<Blame> {
        SidecarError::Rpc {
            task_id: Some(TaskId(1)),
            code,
            message: message.to_owned(),
        }
        .blame()
    }

    /// NSN's deployed sidecar's failures (shared/SIDECAR.md), each with
    /// whom it blames. None of them is the model's: NSN's sidecar never
    /// says "the model failed on a valid input".
    #[test]
    fn nsn_wordings_blame_who_they_say() {
        // In the body.
        for (message, blame) in [
            (
                "Plugin policy violation: untrusted plugins require sandboxed execution",
                Blame::Setup,
            ),
            (
                "Task execution failed: plugin runner not configured",
                Blame::Setup,
            ),
            (
                "Task execution failed: plugin runner command is empty",
                Blame::Setup,
            ),
            (
                "Invalid request: expected value at line 1 column 1",
                Blame::Task,
            ),
            (
                "Invalid request: parameters must be a JSON object",
                Blame::Task,
            ),
            (
                "Task execution failed: CUDA error: out of memory",
                Blame::Unknown,
            ),
            (
                "Task execution failed: Traceback (most recent call last)",
                Blame::Unknown,
            ),
            (
                "Task execution failed: EOF while parsing a value",
                Blame::Unknown,
            ),
            (
                "Task execution failed: plugin output missing 'output' object",
                Blame::Unknown,
            ),
            (
                "Task execution failed: missing 'output_cid'",
                Blame::Unknown,
            ),
            ("the model exploded", Blame::Unknown),
        ] {
            assert_eq!(body(message), blame, "{message}");
        }
        // As a status.
        for (code, message, blame) in [
            (Code::NotFound, "Plugin not found: llama", Some(Blame::Task)),
            (
                Code::FailedPrecondition,
                "Plugin policy violation: plugin 'llama' does not support lane 1",
                Some(Blame::Task),
            ),
            (
                Code::FailedPrecondition,
                "Plugin registry is disabled",
                Some(Blame::Setup),
            ),
            (
                Code::FailedPrecondition,
                "Task execution failed: non-plugin execution is not supported",
                Some(Blame::Setup),
            ),
            (
                Code::FailedPrecondition,
                "Container is unhealthy: c1",
                Some(Blame::Setup),
            ),
            (
                Code::InvalidArgument,
                "Invalid request: invalid lane value",
                Some(Blame::Setup),
            ),
            (
                Code::ResourceExhausted,
                "Container limit reached: 4",
                Some(Blame::Setup),
            ),
            (
                Code::ResourceExhausted,
                "Insufficient VRAM: required 8 GB, available 1 GB",
                Some(Blame::Setup),
            ),
            (
                Code::DeadlineExceeded,
                "Task 7 timed out after 1000 ms",
                Some(Blame::Time),
            ),
            (Code::Internal, "Internal error: boom", Some(Blame::Setup)),
            (
                Code::Internal,
                "Plugin registry error: io",
                Some(Blame::Setup),
            ),
            (
                Code::Unauthenticated,
                "missing or wrong credential",
                Some(Blame::Setup),
            ),
            // Busy, or no answer: not a verdict on the run.
            (
                Code::ResourceExhausted,
                "the sidecar runs at most 4 models at once",
                None,
            ),
            (Code::Unavailable, "connection refused", None),
        ] {
            assert_eq!(status(code, message), blame, "{code:?} {message}");
        }
        for cancel in ["cancelled", "Cancelled: lane 0", "Task was cancelled: 7"] {
            assert!(is_cancel_words(cancel), "{cancel}");
        }
        assert!(!is_cancel_words("Task execution failed: cancelled by user"));
    }

    #[test]
    fn only_a_verdict_names_the_model() {
        assert_eq!(Blame::from_verdict("model-failed"), Some(Blame::Model));
        for b in [Blame::Model, Blame::Task, Blame::Time, Blame::Setup] {
            assert_eq!(Blame::from_verdict(b.verdict()), Some(b));
        }
        assert_eq!(Blame::from_verdict("the model failed"), None);
        assert_ne!(body("model failed on a valid input"), Blame::Model);
    }
}
