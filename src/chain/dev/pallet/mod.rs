//! The task-market pallet's state machine, in process: calls with their origin
//! rules and errors, events, escrow, payment, renderers, validators, executor
//! selection and the per-block hooks. It is synchronous and pure: the
//! [`DevChain`](super::DevChain) wraps it in blocks, a pool and streams.
//!
//! Every call checks everything before it changes anything, so a failed
//! dispatch leaves the state as it was (as a FRAME dispatch is transactional).

use std::collections::{BTreeMap, BTreeSet};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use crate::chain::{
    BlockHash, DispatchError, EventRecord, MarketCall, MarketError, MarketEvent, Phase, TaskIntent,
};
use crate::task::{
    AccountId, Balance, BlockNumber, FailReason, Lane, MAX_CID_LEN, MAX_MODEL_ID_LEN, Priority,
    TaskId, TaskStatus, UNIT,
};

type Blake2b256 = Blake2b<U32>;

/// BLAKE2b-256 of the input, the hash the runtime uses.
pub(crate) fn blake2_256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Blake2b256::digest(data));
    out
}

/// The pallet's constants. [`Default`] gives the NSN runtime's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketParams {
    /// Most open tasks per lane (`MaxPendingTasks`).
    pub max_pending_tasks: u32,
    /// Most results waiting for verification, chain-wide
    /// (`MaxPendingVerifications`).
    pub max_pending_verifications: u32,
    /// Most assigned or executing Lane 1 tasks (`MaxAssignedLane1Tasks`).
    pub max_assigned_lane1_tasks: u32,
    /// Most executors considered for one assignment (`MaxAssignmentCandidates`).
    pub max_assignment_candidates: u32,
    /// Most tasks expired (and verifications timed out) per block (`MaxExpiredPerBlock`).
    pub max_expired_per_block: u32,
    /// Most Lane 1 tasks preempted per block (`MaxPreemptionsPerBlock`).
    pub max_preemptions_per_block: u32,
    /// Most renderers in the registry (`MaxRegisteredRenderers`).
    pub max_registered_renderers: u32,
    /// Highest latency a Lane 0 renderer may declare (`MaxLane0LatencyMs`).
    pub max_lane0_latency_ms: u32,
    /// Highest latency a Lane 1 renderer may declare (`MaxLane1LatencyMs`).
    pub max_lane1_latency_ms: u32,
    /// Most VRAM a renderer may need (`MaxRendererVramMb`).
    pub max_renderer_vram_mb: u32,
    /// Least escrow a task may carry (`MinEscrow`).
    pub min_escrow: Balance,
    /// Most attestations per task (`MaxAttestations`).
    pub max_attestations: u32,
    /// Attestations needed to finalize (`VerificationQuorum`).
    pub verification_quorum: u32,
    /// Blocks validators have to attest (`VerificationPeriod`).
    pub verification_period: BlockNumber,
    /// Lowest passing average score (`MinAttestationScore`).
    pub min_attestation_score: u8,
    /// What a rejection (a low score, or a missed verification deadline)
    /// takes from the executor's stake (`VerificationFailureSlash`).
    pub verification_failure_slash: Balance,
    /// What failed or preempted work — `fail_task` with `ExecutorFailed` or
    /// `Preempted`, or the preemption hook — takes from the executor's stake
    /// (`TaskAbandonmentSlash`).
    pub task_abandonment_slash: Balance,
}

impl Default for MarketParams {
    fn default() -> Self {
        MarketParams {
            max_pending_tasks: 1000,
            max_pending_verifications: 1000,
            max_assigned_lane1_tasks: 1000,
            max_assignment_candidates: 100,
            max_expired_per_block: 100,
            max_preemptions_per_block: 10,
            max_registered_renderers: 256,
            max_lane0_latency_ms: 15_000,
            max_lane1_latency_ms: 120_000,
            max_renderer_vram_mb: 11_500,
            min_escrow: UNIT / 10,
            max_attestations: 5,
            verification_quorum: 2,
            verification_period: 100,
            min_attestation_score: 70,
            verification_failure_slash: 5 * UNIT,
            task_abandonment_slash: 5 * UNIT,
        }
    }
}

impl MarketParams {
    /// Checks the constants make sense together.
    pub fn validate(&self) -> Result<(), MarketError> {
        if self.verification_quorum == 0 || self.verification_quorum > self.max_attestations {
            return Err(MarketError::InvalidVerificationQuorum);
        }
        Ok(())
    }
}

/// Who made a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A signed account.
    Signed(AccountId),
    /// Root (sudo).
    Root,
}

impl Origin {
    fn signed(self) -> Result<AccountId, DispatchError> {
        match self {
            Origin::Signed(who) => Ok(who),
            Origin::Root => Err(DispatchError::BadOrigin),
        }
    }
}

/// A registered renderer (model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendererInfo {
    /// Its lane.
    pub lane: Lane,
    /// Whether its output is deterministic.
    pub deterministic: bool,
    /// Its declared worst-case latency.
    pub max_latency_ms: u32,
    /// The VRAM it needs.
    pub vram_required_mb: u32,
    /// The block it was registered in.
    pub registered_at: BlockNumber,
}

/// Why an executor was slashed. The pallet's own rules (its hooks, the
/// validators' verdict) are apart from slashes that a call caused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlashCause {
    /// The preemption hook failed its assigned Lane 1 task while Lane 0 work
    /// was open (`TaskAbandonmentSlash`).
    PreemptionHook,
    /// Its result got no quorum before the verification deadline
    /// (`VerificationFailureSlash`, by the hook or `finalize_task`).
    VerificationTimeout,
    /// Its result's average score was under the minimum
    /// (`VerificationFailureSlash`).
    LowScore,
    /// Its own `fail_task` with `ExecutorFailed` or `Preempted`
    /// (`TaskAbandonmentSlash`).
    ExecutorFailTask,
    /// The requester's `fail_task` with `ExecutorFailed` or `Preempted`
    /// (`TaskAbandonmentSlash`).
    RequesterFailTask,
}

/// An executor's slashes, counted by cause.
pub type SlashCounts = BTreeMap<SlashCause, u32>;

/// An account's balances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountData {
    /// Spendable.
    pub free: Balance,
    /// Held (escrow, stake).
    pub reserved: Balance,
}

/// A node eligible for assignments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorInfo {
    /// Its stake (held as reserved balance); the weight of its selection.
    pub stake: Balance,
    /// The lanes it serves.
    pub lanes: Vec<Lane>,
}

/// One validator's attestation of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The validator.
    pub validator: AccountId,
    /// Its score, 0–100.
    pub score: u8,
    /// Its attestation's CID.
    pub attestation_cid: Option<Vec<u8>>,
}

/// The block a call or hook runs in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockCtx {
    pub(crate) number: BlockNumber,
    pub(crate) parent_hash: BlockHash,
}

/// The pallet's storage and logic.
#[derive(Clone, Debug)]
pub struct Market {
    params: MarketParams,
    next_task_id: u64,
    tasks: BTreeMap<TaskId, TaskIntent>,
    open_lane0: Vec<TaskId>,
    open_lane1: Vec<TaskId>,
    slashes: BTreeMap<AccountId, SlashCounts>,
    assigned_lane1: Vec<TaskId>,
    pending_verification: Vec<TaskId>,
    attestations: BTreeMap<TaskId, Vec<Attestation>>,
    required_quorum: BTreeMap<TaskId, u32>,
    verification_deadline: BTreeMap<TaskId, BlockNumber>,
    renderers: BTreeMap<Vec<u8>, RendererInfo>,
    accounts: BTreeMap<AccountId, AccountData>,
    executors: BTreeMap<AccountId, ExecutorInfo>,
    validators: BTreeSet<AccountId>,
    treasury: AccountId,
    total_issuance: Balance,
    // Journal of the block being built.
    events: Vec<EventRecord>,
    phase: Phase,
    touched: BTreeSet<TaskId>,
    /// Changes to `AssignedLane1Tasks` in this block: (task, added).
    assigned_log: Vec<(TaskId, bool)>,
}

/// Why a genesis configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// The constants do not make sense together.
    #[error("invalid market parameters: {0}")]
    Params(MarketError),
    /// A renderer could not be registered.
    #[error("renderer {id:?} rejected: {error}")]
    Renderer {
        /// The renderer id.
        id: String,
        /// Why.
        error: MarketError,
    },
    /// An executor's stake is more than its balance.
    #[error("executor {0} cannot cover its stake")]
    Stake(AccountId),
    /// Balances overflow the issuance.
    #[error("total issuance overflows")]
    Issuance,
}

impl Market {
    /// An empty market with these constants, paying its treasury share to `treasury`.
    pub fn new(params: MarketParams, treasury: AccountId) -> Result<Self, GenesisError> {
        params.validate().map_err(GenesisError::Params)?;
        Ok(Market {
            params,
            next_task_id: 0,
            tasks: BTreeMap::new(),
            open_lane0: Vec::new(),
            open_lane1: Vec::new(),
            assigned_lane1: Vec::new(),
            pending_verification: Vec::new(),
            attestations: BTreeMap::new(),
            required_quorum: BTreeMap::new(),
            verification_deadline: BTreeMap::new(),
            renderers: BTreeMap::new(),
            accounts: BTreeMap::new(),
            executors: BTreeMap::new(),
            validators: BTreeSet::new(),
            slashes: BTreeMap::new(),
            treasury,
            total_issuance: 0,
            events: Vec::new(),
            phase: Phase::Initialization,
            touched: BTreeSet::new(),
            assigned_log: Vec::new(),
        })
    }

    // ---- genesis -------------------------------------------------------

    /// Genesis: gives an account free balance.
    pub fn endow(&mut self, who: AccountId, amount: Balance) -> Result<(), GenesisError> {
        self.total_issuance = self
            .total_issuance
            .checked_add(amount)
            .ok_or(GenesisError::Issuance)?;
        let acc = self.accounts.entry(who).or_default();
        acc.free = acc.free.checked_add(amount).ok_or(GenesisError::Issuance)?;
        Ok(())
    }

    /// Genesis: registers an executor, reserving its stake from its balance.
    pub fn add_executor(
        &mut self,
        who: AccountId,
        stake: Balance,
        lanes: Vec<Lane>,
    ) -> Result<(), GenesisError> {
        let acc = self.accounts.entry(who).or_default();
        if acc.free < stake {
            return Err(GenesisError::Stake(who));
        }
        acc.free -= stake;
        acc.reserved += stake;
        self.executors.insert(who, ExecutorInfo { stake, lanes });
        Ok(())
    }

    /// Genesis: adds a validator.
    pub fn add_validator(&mut self, who: AccountId) {
        self.validators.insert(who);
    }

    /// Genesis: registers a renderer with the same checks as `register_renderer`.
    /// Genesis: registers a renderer through the same code as the
    /// `register_renderer` call (its `RendererRegistered` event goes into the
    /// genesis block).
    pub fn add_renderer(&mut self, id: &[u8], info: RendererInfo) -> Result<(), GenesisError> {
        self.register_renderer(id.to_vec(), info)
            .map_err(|error| GenesisError::Renderer {
                id: String::from_utf8_lossy(id).into_owned(),
                error,
            })
    }

    // ---- reads ----------------------------------------------------------

    /// Sets the chain-wide bound on results waiting for verification (a
    /// cap that fills under load, for tests and the soak).
    pub fn set_max_pending_verifications(&mut self, max: u32) {
        self.params.max_pending_verifications = max;
    }

    /// The constants.
    pub fn params(&self) -> &MarketParams {
        &self.params
    }

    /// `Tasks(id)`.
    pub fn task(&self, id: TaskId) -> Option<&TaskIntent> {
        self.tasks.get(&id)
    }

    /// `NextTaskId`.
    pub fn next_task_id(&self) -> u64 {
        self.next_task_id
    }

    /// `OpenLane0Tasks` or `OpenLane1Tasks`.
    pub fn open_tasks(&self, lane: Lane) -> &[TaskId] {
        match lane {
            Lane::Lane0 => &self.open_lane0,
            Lane::Lane1 => &self.open_lane1,
        }
    }

    /// `AssignedLane1Tasks`.
    pub fn assigned_lane1_tasks(&self) -> &[TaskId] {
        &self.assigned_lane1
    }

    /// `PendingVerificationTasks`.
    pub fn pending_verification_tasks(&self) -> &[TaskId] {
        &self.pending_verification
    }

    /// `Attestations(id)`.
    pub fn attestations(&self, id: TaskId) -> &[Attestation] {
        self.attestations.get(&id).map_or(&[], Vec::as_slice)
    }

    /// `VerificationDeadline(id)`.
    pub fn verification_deadline(&self, id: TaskId) -> Option<BlockNumber> {
        self.verification_deadline.get(&id).copied()
    }

    /// `RequiredQuorum(id)`.
    pub fn required_quorum(&self, id: TaskId) -> Option<u32> {
        self.required_quorum.get(&id).copied()
    }

    /// `RendererRegistry`.
    pub fn renderers(&self) -> &BTreeMap<Vec<u8>, RendererInfo> {
        &self.renderers
    }

    /// An account's balances.
    pub fn account(&self, who: &AccountId) -> AccountData {
        self.accounts.get(who).copied().unwrap_or_default()
    }

    /// A registered executor.
    pub fn executor(&self, who: &AccountId) -> Option<&ExecutorInfo> {
        self.executors.get(who)
    }

    /// The validators.
    pub fn validators(&self) -> &BTreeSet<AccountId> {
        &self.validators
    }

    /// The treasury account.
    pub fn treasury(&self) -> AccountId {
        self.treasury
    }

    /// All balances in existence.
    pub fn total_issuance(&self) -> Balance {
        self.total_issuance
    }

    /// True while any Lane 0 task is open.
    pub fn lane0_open(&self) -> bool {
        !self.open_lane0.is_empty()
    }

    /// An account's slashes so far, by cause.
    pub fn slashes(&self, who: &AccountId) -> SlashCounts {
        self.slashes.get(who).cloned().unwrap_or_default()
    }

    /// Slashes of an account that its own calls caused (`fail_task` with a
    /// slashing reason sent by the executor itself).
    pub fn slashes_by_own_calls(&self, who: &AccountId) -> u32 {
        self.slashes(who)
            .get(&SlashCause::ExecutorFailTask)
            .copied()
            .unwrap_or(0)
    }

    /// The order of an open queue: priority (High first), then earlier
    /// deadline, then arrival (task ids grow with arrival).
    pub fn open_order(task: &TaskIntent) -> (Priority, BlockNumber, TaskId) {
        (task.priority, task.deadline, task.id)
    }

    /// Puts a new task into its lane's open queue, in the queue's order.
    pub(super) fn insert_open(&mut self, lane: Lane, id: TaskId) {
        let Some(key) = self.tasks.get(&id).map(Self::open_order) else {
            return;
        };
        let tasks = &self.tasks;
        let queue = match lane {
            Lane::Lane0 => &mut self.open_lane0,
            Lane::Lane1 => &mut self.open_lane1,
        };
        let at = queue
            .partition_point(|other| tasks.get(other).is_some_and(|t| Self::open_order(t) <= key));
        queue.insert(at, id);
    }

    // ---- journal ----------------------------------------------------------

    pub(crate) fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    pub(crate) fn take_events(&mut self) -> Vec<EventRecord> {
        std::mem::take(&mut self.events)
    }

    pub(crate) fn event_count(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn events_since(&self, start: usize) -> impl Iterator<Item = &EventRecord> {
        self.events[start..].iter()
    }

    pub(crate) fn take_touched(&mut self) -> (BTreeSet<TaskId>, Vec<(TaskId, bool)>) {
        (
            std::mem::take(&mut self.touched),
            std::mem::take(&mut self.assigned_log),
        )
    }

    fn deposit(&mut self, event: MarketEvent) {
        self.events.push(EventRecord {
            phase: self.phase,
            event,
        });
    }

    fn task_mut(&mut self, id: TaskId) -> Option<&mut TaskIntent> {
        self.touched.insert(id);
        self.tasks.get_mut(&id)
    }

    fn set_status(&mut self, id: TaskId, status: TaskStatus) {
        if let Some(t) = self.task_mut(id) {
            t.status = status;
        }
    }
}

mod calls;
mod hooks;
mod settlement;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_split_adds_up_and_floors_the_shares() {
        assert_eq!(Market::payment_split(100), (70, 20, 10));
        assert_eq!(
            Market::payment_split(UNIT),
            (UNIT / 10 * 7, UNIT / 5, UNIT / 10)
        );
        // 7 * 0.7 = 4.9 → 4; 7 * 0.2 = 1.4 → 1; burn takes the rest.
        assert_eq!(Market::payment_split(7), (4, 1, 2));
        assert_eq!(Market::payment_split(1), (0, 0, 1));
        assert_eq!(Market::payment_split(0), (0, 0, 0));
        let (e, t, b) = Market::payment_split(u128::MAX);
        assert_eq!(e + t + b, u128::MAX, "no overflow at the top");
        assert_eq!(e, u128::MAX / 100 * 70 + u128::MAX % 100 * 70 / 100);
    }

    #[test]
    fn quorum_must_fit_the_attestation_limit() {
        let params = MarketParams {
            verification_quorum: 6,
            ..MarketParams::default()
        };
        assert_eq!(
            Market::new(params, AccountId([0; 32])).unwrap_err(),
            GenesisError::Params(MarketError::InvalidVerificationQuorum)
        );
        let params = MarketParams {
            verification_quorum: 0,
            ..MarketParams::default()
        };
        assert!(Market::new(params, AccountId([0; 32])).is_err());
    }

    #[test]
    fn selection_is_deterministic_and_stake_weighted() {
        let mut m = Market::new(MarketParams::default(), AccountId([0; 32])).unwrap();
        let (a, b) = (AccountId([1; 32]), AccountId([2; 32]));
        m.endow(a, 1000).unwrap();
        m.endow(b, 1000).unwrap();
        m.add_executor(a, 900, vec![Lane::Lane1]).unwrap();
        m.add_executor(b, 100, vec![Lane::Lane1]).unwrap();
        let mut picks = [0u32; 2];
        for i in 0..2000u64 {
            let parent = BlockHash(blake2_256(&i.to_le_bytes()));
            let pick = m.select_executor(Lane::Lane1, parent).unwrap();
            assert_eq!(Some(pick), m.select_executor(Lane::Lane1, parent));
            picks[usize::from(pick == b)] += 1;
        }
        // 90 % / 10 % of 2000, with a generous margin.
        assert!((1700..=1900).contains(&picks[0]), "{picks:?}");
        assert_eq!(m.select_executor(Lane::Lane0, BlockHash::default()), None);
    }
}
