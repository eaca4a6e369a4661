//! The task market's calls, and what an included call produced.

use parity_scale_codec::{Decode, Encode};

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use super::{BlockRef, MarketEvent, SubmitError};
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

/// The inclusion (or failure) a [`Pooled`] transaction is waiting for.
pub type InclusionResult = Result<Inclusion, SubmitError>;

/// A transaction the pool has accepted, on its way into a block: `.await`
/// it for what became of it (by default its [`Inclusion`] in a best block,
/// or why it was not included).
///
/// Submitters answer in two steps, because the chain answers in two: the
/// pool's verdict comes at once, inclusion a block later and finality
/// blocks after that. A caller that only needs the pool's acceptance (to
/// start a model run optimistically) goes on at the first step; one that
/// needs the call's effect awaits the second. The inclusion is tracked
/// whether or not the `Pooled` is awaited: dropping it only stops waiting.
pub struct Pooled<T = InclusionResult> {
    nonce: Option<u64>,
    outcome: Pin<Box<dyn Future<Output = T> + Send>>,
}

impl<T: Send + 'static> Pooled<T> {
    /// A pooled transaction with `nonce` whose outcome `outcome` resolves to.
    pub fn new(nonce: Option<u64>, outcome: impl Future<Output = T> + Send + 'static) -> Self {
        Pooled {
            nonce,
            outcome: Box::pin(outcome),
        }
    }

    /// An outcome known already (nothing was sent, or it is final).
    pub fn ready(outcome: T) -> Self {
        Pooled::new(None, std::future::ready(outcome))
    }

    /// The nonce it was signed with (`None` when nothing was sent).
    pub fn nonce(&self) -> Option<u64> {
        self.nonce
    }

    /// The same transaction, its outcome passed through `f` once known.
    pub fn map<U: Send + 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Pooled<U> {
        let outcome = self.outcome;
        Pooled::new(self.nonce, async move { f(outcome.await) })
    }

    /// The same transaction, its outcome passed through the async `f`.
    pub fn then<U, F>(self, f: impl FnOnce(T) -> F + Send + 'static) -> Pooled<U>
    where
        U: Send + 'static,
        F: Future<Output = U> + Send + 'static,
    {
        let outcome = self.outcome;
        Pooled::new(self.nonce, async move { f(outcome.await).await })
    }
}

impl<T> std::fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("nonce", &self.nonce)
            .finish()
    }
}

impl<T> IntoFuture for Pooled<T> {
    type Output = T;
    type IntoFuture = Pin<Box<dyn Future<Output = T> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.outcome
    }
}

/// A submitter's two steps in one: the pool's verdict, then the inclusion.
pub trait SubmitExt:
    tower::Service<MarketCall, Response = Pooled, Error = SubmitError> + Sized
{
    /// Submits `call` once the submitter is ready and waits for its
    /// inclusion (or the reason there is none).
    fn submit(self, call: MarketCall) -> impl Future<Output = InclusionResult> {
        use tower::ServiceExt;
        async move { self.oneshot(call).await?.await }
    }
}

impl<S> SubmitExt for S where
    S: tower::Service<MarketCall, Response = Pooled, Error = SubmitError> + Sized
{
}
