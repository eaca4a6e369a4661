//! Task statuses and fail reasons, in the pallet's SCALE order.

use std::fmt;

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};

/// A task's status on chain (`TaskStatus` in the pallet, same variant order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, MaxEncodedLen)]
pub enum TaskStatus {
    /// Created, escrow reserved, waiting for an executor.
    Open,
    /// An executor was picked; it may start the task.
    Assigned,
    /// The executor called `start_task`.
    Executing,
    /// Completed (reserved by the pallet's type; not reached by its calls).
    Completed,
    /// Failed with a `FailReason`; escrow returned.
    Failed,
    /// Open past its deadline; escrow returned.
    Expired,
    /// A result was submitted; waiting for attestations.
    Submitted,
    /// At least one attestation arrived; waiting for the quorum.
    PendingVerification,
    /// Quorum reached with a passing score; executor paid.
    Verified,
    /// Quorum reached with a failing score, or the verification window ended.
    Rejected,
}

impl TaskStatus {
    /// True when no call can change the task any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Expired
                | TaskStatus::Verified
                | TaskStatus::Rejected
        )
    }

    /// True while the assigned executor may still work on the task
    /// (`Assigned` or `Executing`).
    pub const fn is_in_hand(self) -> bool {
        matches!(self, TaskStatus::Assigned | TaskStatus::Executing)
    }

    /// True once a result is on chain (`Submitted` or later on the success path).
    pub const fn has_result(self) -> bool {
        matches!(
            self,
            TaskStatus::Submitted
                | TaskStatus::PendingVerification
                | TaskStatus::Verified
                | TaskStatus::Rejected
                | TaskStatus::Completed
        )
    }
}

/// Why a task failed (`FailReason` in the pallet, same variant order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, MaxEncodedLen)]
pub enum FailReason {
    /// The executor could not run the task (slashes the executor).
    ExecutorFailed,
    /// Cancelled by the requester.
    Cancelled,
    /// The task ran past its deadline.
    DeadlineExceeded,
    /// Lane 0 work took the GPU (slashes the executor when the executor reports it).
    Preempted,
    /// The task's input was unusable.
    InvalidInput,
    /// Anything else.
    Other,
}

impl FailReason {
    /// True for the reasons the pallet slashes the executor for.
    pub const fn slashes_executor(self) -> bool {
        matches!(self, FailReason::ExecutorFailed | FailReason::Preempted)
    }

    /// Snake-case name, as used in metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailReason::ExecutorFailed => "executor_failed",
            FailReason::Cancelled => "cancelled",
            FailReason::DeadlineExceeded => "deadline_exceeded",
            FailReason::Preempted => "preempted",
            FailReason::InvalidInput => "invalid_input",
            FailReason::Other => "other",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct InvalidEnum {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl InvalidEnum {
    pub(super) fn new(
        what: &'static str,
        value: impl Into<String>,
        expected: &'static str,
    ) -> Self {
        InvalidEnum {
            what,
            value: value.into(),
            expected,
        }
    }
}
