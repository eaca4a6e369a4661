//! The chain port: what the executor needs from a chain, and the types it
//! speaks in. Two backends implement it: the embedded [`dev`] chain (an
//! in-process implementation of the task-market pallet) and the real-chain
//! backend over subxt. Generic code takes a [`ChainPort`] for reads and a
//! submitter — a `tower::Service<MarketCall>` bound to one account, which owns
//! that account's nonce — for writes.
//!
//! The types here mirror the pallet's SCALE layout (see `TASK_MARKET.md`):
//! [`TaskIntent`] decodes from `Tasks(id)` storage bytes, and [`MarketCall`]
//! encodes to the pallet's call bytes (variant index = call index).
//!
//! ```
//! use nsn_lane1::chain::{MarketCall, MarketError};
//! use nsn_lane1::task::{FailReason, TaskId};
//! use parity_scale_codec::Encode;
//!
//! let call = MarketCall::FailTask { task_id: TaskId(7), reason: FailReason::Preempted };
//! assert_eq!(call.name(), "fail_task");
//! assert_eq!(call.encode(), vec![4, 7, 0, 0, 0, 0, 0, 0, 0, 3]);
//! assert_eq!("NotExecutor".parse::<MarketError>().unwrap(), MarketError::NotExecutor);
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use futures::Stream;
use parity_scale_codec::{Decode, Encode};

use crate::task::{
    AccountId, Balance, BlockNumber, FailReason, Lane, Priority, TaskId, TaskStatus,
};

pub mod dev;
#[cfg(feature = "real-chain")]
pub mod subxt;

/// The pallet's name in the runtime.
pub const PALLET: &str = "NsnTaskMarket";

/// The pallet's index in the NSN runtime (and in the in-repo dev runtime).
pub const PALLET_INDEX: u8 = 56;

/// A 32-byte block hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
pub struct BlockHash(pub [u8; 32]);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}…", hex::encode(&self.0[..4]))
    }
}

/// A block by number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Its number.
    pub number: BlockNumber,
    /// Its hash.
    pub hash: BlockHash,
}

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
/// `create_task_intent`'s [`Inclusion::events`]).
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

/// A finalized block with its decoded task-market events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalizedBlock {
    /// Its number.
    pub number: BlockNumber,
    /// Its hash.
    pub hash: BlockHash,
    /// Its parent's hash.
    pub parent_hash: BlockHash,
    /// Its task-market events, in order.
    pub events: Vec<EventRecord>,
}

impl FinalizedBlock {
    /// The block as a reference.
    pub fn block_ref(&self) -> BlockRef {
        BlockRef {
            number: self.number,
            hash: self.hash,
        }
    }
}

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

macro_rules! market_errors {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The pallet's module errors, by variant name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum MarketError {
            $($(#[$doc])* $name,)*
        }

        impl MarketError {
            /// Every variant, in the pallet's order.
            pub const ALL: &'static [MarketError] = &[$(MarketError::$name,)*];

            /// The variant's name, as the chain's metadata spells it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(MarketError::$name => stringify!($name),)*
                }
            }
        }

        impl FromStr for MarketError {
            type Err = UnknownMarketError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $(stringify!($name) => Ok(MarketError::$name),)*
                    _ => Err(UnknownMarketError(s.to_owned())),
                }
            }
        }
    };
}

market_errors! {
    /// No task with this id.
    TaskNotFound,
    /// The task is not open.
    TaskNotOpen,
    /// The task is not assigned.
    TaskNotAssigned,
    /// The task is not assigned or executing.
    TaskNotExecuting,
    /// The task has no result under verification.
    TaskNotSubmitted,
    /// The origin is not the task's executor.
    NotExecutor,
    /// The origin is not a validator.
    NotValidator,
    /// The validator attested this task already.
    DuplicateAttestation,
    /// The task has all the attestations it can take.
    TooManyAttestations,
    /// The score is over 100.
    InvalidAttestationScore,
    /// The configured quorum is unusable.
    InvalidVerificationQuorum,
    /// The verification window has ended.
    VerificationDeadlinePassed,
    /// Neither quorum nor the verification deadline has been reached.
    VerificationPending,
    /// The origin is not the task's requester.
    NotRequester,
    /// The lane's open-task list is full.
    TooManyPendingTasks,
    /// The assigned Lane 1 task list is full.
    TooManyAssignedLane1Tasks,
    /// The pending-verification list is full.
    TooManyPendingVerifications,
    /// Arithmetic overflow.
    Overflow,
    /// The requester cannot cover the escrow.
    InsufficientBalance,
    /// The escrow is under `MinEscrow`.
    InsufficientEscrow,
    /// The deadline is zero blocks away.
    InvalidDeadline,
    /// The task has an executor already.
    TaskAlreadyAssigned,
    /// No executor is eligible for the lane.
    NoEligibleExecutors,
    /// Lane 0 tasks are open: Lane 1 must wait.
    Lane0Priority,
    /// Burning the burn share failed.
    BurnFailed,
    /// The renderer registry is full.
    RendererRegistryFull,
    /// The renderer is registered already.
    RendererAlreadyRegistered,
    /// The renderer id is empty or too long.
    InvalidRendererId,
    /// The renderer is not registered.
    RendererNotRegistered,
    /// The renderer serves another lane.
    RendererLaneMismatch,
    /// The renderer's latency is over the lane's limit.
    RendererLatencyExceeded,
    /// A Lane 0 renderer must be deterministic.
    RendererNotDeterministic,
    /// The renderer needs more VRAM than allowed.
    RendererVramExceeded,
    /// Lane 0 results need an attestation CID.
    MissingAttestation,
    /// The attestation CID is empty or too long.
    InvalidAttestationCid,
}

impl fmt::Display for MarketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A module error name that is not one of the task market's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a task-market error")]
pub struct UnknownMarketError(pub String);

/// Why an included extrinsic failed to dispatch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// A pallet's module error, by pallet and variant name.
    #[error("{pallet}::{error}")]
    Module {
        /// The pallet's name.
        pallet: String,
        /// The error variant's name.
        error: String,
    },
    /// The origin may not make this call.
    #[error("bad origin")]
    BadOrigin,
    /// Any other dispatch error, as the chain described it.
    #[error("{0}")]
    Other(String),
}

impl DispatchError {
    /// A task-market module error.
    pub fn market(error: MarketError) -> Self {
        DispatchError::Module {
            pallet: PALLET.to_owned(),
            error: error.name().to_owned(),
        }
    }

    /// The task-market error, if this is one.
    pub fn market_error(&self) -> Option<MarketError> {
        match self {
            DispatchError::Module { pallet, error } if pallet == PALLET => error.parse().ok(),
            _ => None,
        }
    }
}

impl From<MarketError> for DispatchError {
    fn from(e: MarketError) -> Self {
        DispatchError::market(e)
    }
}

/// Why a transaction was not accepted into a block at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTransaction {
    /// Its nonce was used already.
    #[error("nonce {nonce} is stale (account is at {expected})")]
    Stale {
        /// The nonce sent.
        nonce: u64,
        /// The account's next nonce.
        expected: u64,
    },
    /// Another transaction with this nonce is in the pool already.
    #[error("a transaction with nonce {nonce} is already in the pool (priority too low)")]
    PriorityTooLow {
        /// The nonce sent.
        nonce: u64,
    },
    /// Its arguments do not decode into the call's types (for example a
    /// bounded vector over its bound).
    #[error("call does not decode: {0}")]
    BadCall(String),
    /// The pool holds too many transactions.
    #[error("transaction pool is full")]
    PoolFull,
    /// The signer cannot pay for it.
    #[error("signer cannot pay the fee")]
    Payment,
    /// Any other reason, as the chain described it.
    #[error("{0}")]
    Other(String),
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

/// Why a submission did not produce an [`Inclusion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Included, but its dispatch failed.
    #[error("{call} failed in block #{}: {error}", block.number)]
    Dispatch {
        /// The call's name.
        call: &'static str,
        /// The dispatch error.
        error: DispatchError,
        /// The block it was included in.
        block: BlockRef,
    },
    /// Rejected before inclusion.
    #[error("{call} was rejected: {reason}")]
    Invalid {
        /// The call's name.
        call: &'static str,
        /// Why.
        reason: InvalidTransaction,
    },
    /// The transaction left the pool without being included.
    #[error("{call} was dropped from the pool")]
    Dropped {
        /// The call's name.
        call: &'static str,
    },
    /// The chain could not be reached.
    #[error("chain connection failed: {0}")]
    Connection(String),
    /// The chain (or submitter) has shut down.
    #[error("chain has shut down")]
    Closed,
}

impl SubmitError {
    /// The task-market error behind a dispatch failure, if that is what this is.
    pub fn market_error(&self) -> Option<MarketError> {
        match self {
            SubmitError::Dispatch { error, .. } => error.market_error(),
            _ => None,
        }
    }
}

/// Why a chain read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain does not know this block.
    #[error("unknown block {0}")]
    UnknownBlock(BlockHash),
    /// The block is older than the history the chain keeps.
    #[error("block #{number} is no longer available (history starts at #{oldest})")]
    Pruned {
        /// The block asked for.
        number: BlockNumber,
        /// The oldest block kept.
        oldest: BlockNumber,
    },
    /// Data from the chain did not decode.
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The chain could not be reached.
    #[error("chain connection failed: {0}")]
    Connection(String),
    /// The chain has shut down.
    #[error("chain has shut down")]
    Closed,
}

/// A stream of finalized blocks, in order, without gaps.
pub type BlockStream = Pin<Box<dyn Stream<Item = Result<FinalizedBlock, ChainError>> + Send>>;

/// Reads from a chain: finalized blocks, task storage, nonces.
///
/// Storage reads take the block to read at, so that a task is read in the
/// state of the block whose event mentioned it.
pub trait ChainPort: Clone + Send + Sync + 'static {
    /// Finalized blocks from `from` (inclusive) on, or from the next new block
    /// when `from` is `None`. The stream has no gaps; it ends when the chain
    /// shuts down.
    fn finalized_blocks(&self, from: Option<BlockNumber>) -> BlockStream;

    /// The latest finalized block.
    fn finalized_head(&self) -> impl Future<Output = Result<BlockRef, ChainError>> + Send;

    /// `Tasks(id)` at a block.
    fn task(
        &self,
        at: BlockHash,
        id: TaskId,
    ) -> impl Future<Output = Result<Option<TaskIntent>, ChainError>> + Send;

    /// `AssignedLane1Tasks` at a block.
    fn assigned_lane1_tasks(
        &self,
        at: BlockHash,
    ) -> impl Future<Output = Result<Vec<TaskId>, ChainError>> + Send;

    /// `OpenLane1Tasks` at a block: candidates not yet assigned.
    fn open_lane1_tasks(
        &self,
        at: BlockHash,
    ) -> impl Future<Output = Result<Vec<TaskId>, ChainError>> + Send;

    /// The account's next nonce, counting transactions waiting in the pool.
    fn account_nonce(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<u64, ChainError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_indices_follow_the_pallet() {
        let calls = [
            MarketCall::CreateTaskIntent {
                lane: Lane::Lane1,
                priority: Priority::Normal,
                model_requirements: vec![],
                input_cid: vec![],
                compute_budget: 0,
                deadline_blocks: 1,
                escrow_amount: 0,
            },
            MarketCall::AcceptAssignment { task_id: TaskId(1) },
            MarketCall::StartTask { task_id: TaskId(1) },
            MarketCall::SubmitResult {
                task_id: TaskId(1),
                output_cid: vec![],
                attestation_cid: None,
            },
            MarketCall::FailTask {
                task_id: TaskId(1),
                reason: FailReason::Other,
            },
            MarketCall::RegisterRenderer {
                renderer_id: vec![],
                lane: Lane::Lane0,
                deterministic: true,
                max_latency_ms: 0,
                vram_required_mb: 0,
            },
            MarketCall::DeregisterRenderer {
                renderer_id: vec![],
            },
            MarketCall::SubmitAttestation {
                task_id: TaskId(1),
                score: 0,
                attestation_cid: None,
            },
            MarketCall::FinalizeTask { task_id: TaskId(1) },
        ];
        for (i, call) in calls.iter().enumerate() {
            let bytes = call.encode();
            assert_eq!(bytes[0], i as u8, "{}", call.name());
            assert_eq!(&MarketCall::decode(&mut &bytes[..]).unwrap(), call);
        }
    }

    #[test]
    fn task_intent_layout_is_the_pallets() {
        let t = TaskIntent {
            id: TaskId(0x0102),
            lane: Lane::Lane1,
            priority: Priority::High,
            requester: AccountId([9; 32]),
            executor: None,
            status: TaskStatus::Open,
            escrow: 5,
            created_at: 3,
            deadline: 4,
            model_requirements: b"m".to_vec(),
            input_cid: b"c".to_vec(),
            compute_budget: 6,
            output_cid: None,
            attestation_cid: None,
        };
        let mut want = vec![2, 1, 0, 0, 0, 0, 0, 0, 1, 0];
        want.extend([9; 32]);
        want.extend([0, 0]);
        want.extend(5u128.to_le_bytes());
        want.extend(3u32.to_le_bytes());
        want.extend(4u32.to_le_bytes());
        want.extend([4, b'm', 4, b'c']);
        want.extend(6u64.to_le_bytes());
        want.extend([0, 0]);
        assert_eq!(t.encode(), want);
        assert_eq!(TaskIntent::decode(&mut &want[..]).unwrap(), t);
    }

    #[test]
    fn market_error_names_round_trip() {
        assert_eq!(MarketError::ALL.len(), 35);
        for e in MarketError::ALL {
            assert_eq!(e.name().parse::<MarketError>().unwrap(), *e);
            let d = DispatchError::market(*e);
            assert_eq!(d.market_error(), Some(*e));
            assert_eq!(d.to_string(), format!("NsnTaskMarket::{}", e.name()));
        }
        assert!("Nope".parse::<MarketError>().is_err());
        let other = DispatchError::Module {
            pallet: "Balances".into(),
            error: "NotExecutor".into(),
        };
        assert_eq!(
            other.market_error(),
            None,
            "another pallet's error is not ours"
        );
    }
}
