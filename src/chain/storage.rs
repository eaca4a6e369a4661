//! Storage values the executor reads.

use parity_scale_codec::{Decode, Encode};

use crate::task::{AccountId, Balance, BlockNumber, Lane, Priority, TaskId, TaskStatus};

/// The value of `Tasks(task_id)`, field for field in the pallet's order.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct TaskIntent {
    /// The task id.
    pub id: TaskId,
    /// Its lane.
    pub lane: Lane,
    /// Its priority.
    pub priority: Priority,
    /// Who created it.
    pub requester: AccountId,
    /// The assigned executor, once there is one.
    pub executor: Option<AccountId>,
    /// Its status.
    pub status: TaskStatus,
    /// The escrow reserved.
    pub escrow: Balance,
    /// The block it was created in.
    pub created_at: BlockNumber,
    /// Its deadline block.
    pub deadline: BlockNumber,
    /// The model it needs (≤ 64 bytes).
    pub model_requirements: Vec<u8>,
    /// Its input's CID (≤ 128 bytes).
    pub input_cid: Vec<u8>,
    /// The requester's compute budget.
    pub compute_budget: u64,
    /// The submitted result's CID.
    pub output_cid: Option<Vec<u8>>,
    /// The submitted attestation's CID.
    pub attestation_cid: Option<Vec<u8>>,
}
