//! The task market's events, in the pallet's variant order and field layout.

use parity_scale_codec::{Decode, Encode};

use crate::task::{AccountId, Balance, BlockNumber, FailReason, Lane, Priority, TaskId};

/// When in a block an event was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Phase {
    /// While applying the extrinsic at this index.
    ApplyExtrinsic(u32),
    /// In `on_finalize`.
    Finalization,
    /// In `on_initialize` (the pallet's per-block hooks).
    Initialization,
}

/// One task-market event, with the pallet's field names and types. Byte
/// fields are kept as the chain sent them; the listener validates them.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[non_exhaustive]
pub enum MarketEvent {
    /// A requester created a task and reserved its escrow.
    TaskCreated {
        /// The new task's id.
        task_id: TaskId,
        /// Who created it.
        requester: AccountId,
        /// The escrow reserved.
        escrow: Balance,
        /// Its deadline block.
        deadline: BlockNumber,
        /// Its lane.
        lane: Lane,
        /// Its priority.
        priority: Priority,
        /// The model it needs.
        model_requirements: Vec<u8>,
    },
    /// An executor was picked for a task.
    TaskAssigned {
        /// The task.
        task_id: TaskId,
        /// The executor picked.
        executor: AccountId,
    },
    /// The executor started the task.
    TaskStarted {
        /// The task.
        task_id: TaskId,
        /// Its executor.
        executor: AccountId,
    },
    /// The executor submitted a result.
    TaskSubmitted {
        /// The task.
        task_id: TaskId,
        /// Its executor.
        executor: AccountId,
        /// The result's CID.
        output_cid: Vec<u8>,
        /// The attestation's CID, if any.
        attestation_cid: Option<Vec<u8>>,
        /// The last block in which validators may attest.
        verification_deadline: BlockNumber,
        /// Attestations needed.
        required_quorum: u32,
    },
    /// A validator attested a result.
    AttestationSubmitted {
        /// The task.
        task_id: TaskId,
        /// The validator.
        validator: AccountId,
        /// Its score, 0–100.
        score: u8,
    },
    /// Quorum reached with a passing score: the executor was paid.
    TaskVerified {
        /// The task.
        task_id: TaskId,
        /// Its executor.
        executor: AccountId,
        /// What the executor received (70 % of the escrow).
        payment: Balance,
        /// The average score.
        average_score: u8,
    },
    /// The result was rejected (failing score, or no quorum in time).
    TaskRejected {
        /// The task.
        task_id: TaskId,
        /// Its executor.
        executor: Option<AccountId>,
        /// The average score, if any attestation arrived.
        average_score: Option<u8>,
        /// True when the verification window ended without a quorum.
        deadline_exceeded: bool,
    },
    /// The task failed.
    TaskFailed {
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: FailReason,
    },
    /// An open task passed its deadline.
    TaskExpired {
        /// The task.
        task_id: TaskId,
    },
    /// Root registered a renderer (model).
    RendererRegistered {
        /// The renderer (model) id.
        renderer_id: Vec<u8>,
        /// Its lane.
        lane: Lane,
        /// Whether its output is deterministic.
        deterministic: bool,
        /// Its declared worst-case latency.
        max_latency_ms: u32,
        /// The VRAM it needs.
        vram_required_mb: u32,
    },
    /// Root removed a renderer.
    RendererDeregistered {
        /// The renderer (model) id.
        renderer_id: Vec<u8>,
    },
}

impl MarketEvent {
    /// The event's variant name, as the chain's metadata spells it.
    pub fn name(&self) -> &'static str {
        match self {
            MarketEvent::TaskCreated { .. } => "TaskCreated",
            MarketEvent::TaskAssigned { .. } => "TaskAssigned",
            MarketEvent::TaskStarted { .. } => "TaskStarted",
            MarketEvent::TaskSubmitted { .. } => "TaskSubmitted",
            MarketEvent::AttestationSubmitted { .. } => "AttestationSubmitted",
            MarketEvent::TaskVerified { .. } => "TaskVerified",
            MarketEvent::TaskRejected { .. } => "TaskRejected",
            MarketEvent::TaskFailed { .. } => "TaskFailed",
            MarketEvent::TaskExpired { .. } => "TaskExpired",
            MarketEvent::RendererRegistered { .. } => "RendererRegistered",
            MarketEvent::RendererDeregistered { .. } => "RendererDeregistered",
        }
    }

    /// The task the event is about, if it is about one.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            MarketEvent::TaskCreated { task_id, .. }
            | MarketEvent::TaskAssigned { task_id, .. }
            | MarketEvent::TaskStarted { task_id, .. }
            | MarketEvent::TaskSubmitted { task_id, .. }
            | MarketEvent::AttestationSubmitted { task_id, .. }
            | MarketEvent::TaskVerified { task_id, .. }
            | MarketEvent::TaskRejected { task_id, .. }
            | MarketEvent::TaskFailed { task_id, .. }
            | MarketEvent::TaskExpired { task_id } => Some(*task_id),
            MarketEvent::RendererRegistered { .. } | MarketEvent::RendererDeregistered { .. } => {
                None
            }
        }
    }
}

/// The id announced by the first `TaskCreated` among `events` (for example a
/// `create_task_intent`'s [`Inclusion::events`](super::Inclusion::events)).
pub fn created_task_id(events: &[MarketEvent]) -> Option<TaskId> {
    events.iter().find_map(|e| match e {
        MarketEvent::TaskCreated { task_id, .. } => Some(*task_id),
        _ => None,
    })
}

/// An event with the phase it was emitted in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// When in the block.
    pub phase: Phase,
    /// The event.
    pub event: MarketEvent,
}
