//! The task market's calls, and what an included call produced.

use parity_scale_codec::{Decode, Encode};

use super::{BlockRef, MarketEvent};
use crate::task::{Balance, BlockNumber, FailReason, Lane, Priority, TaskId};

/// A call into the task-market pallet. It SCALE-encodes as the pallet's call
/// (variant index = call index), so a backend only adds the pallet index.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum MarketCall {
    /// Create a task and reserve its escrow (requester).
    #[codec(index = 0)]
    CreateTaskIntent {
        /// Its lane.
        lane: Lane,
        /// Its priority.
        priority: Priority,
        /// The model it needs (≤ 64 bytes, a registered renderer of the lane).
        model_requirements: Vec<u8>,
        /// Its input's CID (≤ 128 bytes).
        input_cid: Vec<u8>,
        /// The compute budget.
        compute_budget: u64,
        /// Blocks until its deadline (> 0).
        deadline_blocks: BlockNumber,
        /// The escrow to reserve (≥ `MinEscrow`).
        escrow_amount: Balance,
    },
    /// Ask the chain to pick an executor for an open task (any signed origin).
    #[codec(index = 1)]
    AcceptAssignment {
        /// The task.
        task_id: TaskId,
    },
    /// Start an assigned task (its executor).
    #[codec(index = 2)]
    StartTask {
        /// The task.
        task_id: TaskId,
    },
    /// Submit a result (its executor).
    #[codec(index = 3)]
    SubmitResult {
        /// The task.
        task_id: TaskId,
        /// The result's CID (≤ 128 bytes).
        output_cid: Vec<u8>,
        /// An attestation CID (required on Lane 0).
        attestation_cid: Option<Vec<u8>>,
    },
    /// Fail a task (its executor or requester; only the requester while open).
    #[codec(index = 4)]
    FailTask {
        /// The task.
        task_id: TaskId,
        /// Why.
        reason: FailReason,
    },
    /// Register a renderer (root).
    #[codec(index = 5)]
    RegisterRenderer {
        /// The renderer (model) id.
        renderer_id: Vec<u8>,
        /// Its lane.
        lane: Lane,
        /// Whether its output is deterministic (required on Lane 0).
        deterministic: bool,
        /// Its worst-case latency.
        max_latency_ms: u32,
        /// The VRAM it needs.
        vram_required_mb: u32,
    },
    /// Remove a renderer (root).
    #[codec(index = 6)]
    DeregisterRenderer {
        /// The renderer (model) id.
        renderer_id: Vec<u8>,
    },
    /// Attest a submitted result (validators).
    #[codec(index = 7)]
    SubmitAttestation {
        /// The task.
        task_id: TaskId,
        /// Score, 0–100.
        score: u8,
        /// The attestation's CID.
        attestation_cid: Option<Vec<u8>>,
    },
    /// Finalize a task after quorum or after its verification deadline (any signed origin).
    #[codec(index = 8)]
    FinalizeTask {
        /// The task.
        task_id: TaskId,
    },
}

impl MarketCall {
    /// The call's name, as the chain's metadata spells it.
    pub fn name(&self) -> &'static str {
        match self {
            MarketCall::CreateTaskIntent { .. } => "create_task_intent",
            MarketCall::AcceptAssignment { .. } => "accept_assignment",
            MarketCall::StartTask { .. } => "start_task",
            MarketCall::SubmitResult { .. } => "submit_result",
            MarketCall::FailTask { .. } => "fail_task",
            MarketCall::RegisterRenderer { .. } => "register_renderer",
            MarketCall::DeregisterRenderer { .. } => "deregister_renderer",
            MarketCall::SubmitAttestation { .. } => "submit_attestation",
            MarketCall::FinalizeTask { .. } => "finalize_task",
        }
    }

    /// The task the call is about, if any.
    pub fn task_id(&self) -> Option<TaskId> {
        match self {
            MarketCall::AcceptAssignment { task_id }
            | MarketCall::StartTask { task_id }
            | MarketCall::SubmitResult { task_id, .. }
            | MarketCall::FailTask { task_id, .. }
            | MarketCall::SubmitAttestation { task_id, .. }
            | MarketCall::FinalizeTask { task_id } => Some(*task_id),
            MarketCall::CreateTaskIntent { .. }
            | MarketCall::RegisterRenderer { .. }
            | MarketCall::DeregisterRenderer { .. } => None,
        }
    }

    /// True for calls only root may make.
    pub fn needs_root(&self) -> bool {
        matches!(
            self,
            MarketCall::RegisterRenderer { .. } | MarketCall::DeregisterRenderer { .. }
        )
    }
}

/// A transaction that made it into a finalized block and dispatched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inclusion {
    /// The block it is in.
    pub block: BlockRef,
    /// Its index in the block.
    pub index: u32,
    /// The nonce it used.
    pub nonce: u64,
    /// The task-market events it emitted.
    pub events: Vec<MarketEvent>,
}
