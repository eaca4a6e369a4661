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
use parity_scale_codec::Encode;

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
    /// Most assigned or executing Lane 1 tasks (`MaxAssignedLane1Tasks`).
    pub max_assigned_lane1_tasks: u32,
    /// Most executors considered for one assignment (`MaxAssignmentCandidates`).
    pub max_assignment_candidates: u32,
    /// Most tasks expired (and verifications timed out) per block (`MaxExpiredPerBlock`).
    pub max_expired_per_block: u32,
    /// Most Lane 1 tasks preempted per block (`MaxPreemptionsPerBlock`).
    pub max_preemptions_per_block: u32,
    /// Most renderers in the registry.
    pub max_renderers: u32,
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
    /// What a slash takes from an executor's stake.
    pub slash_amount: Balance,
}

impl Default for MarketParams {
    fn default() -> Self {
        MarketParams {
            max_pending_tasks: 1000,
            max_assigned_lane1_tasks: 1000,
            max_assignment_candidates: 100,
            max_expired_per_block: 100,
            max_preemptions_per_block: 10,
            max_renderers: 64,
            max_lane0_latency_ms: 15_000,
            max_lane1_latency_ms: 120_000,
            max_renderer_vram_mb: 11_500,
            min_escrow: UNIT / 10,
            max_attestations: 5,
            verification_quorum: 2,
            verification_period: 100,
            min_attestation_score: 70,
            slash_amount: 5 * UNIT,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

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
    pub fn add_renderer(&mut self, id: &[u8], info: RendererInfo) -> Result<(), GenesisError> {
        self.check_renderer(id, &info)
            .map_err(|error| GenesisError::Renderer {
                id: String::from_utf8_lossy(id).into_owned(),
                error,
            })?;
        self.renderers.insert(id.to_vec(), info);
        Ok(())
    }

    // ---- reads ----------------------------------------------------------

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

    // ---- calls ------------------------------------------------------------

    /// Dispatches a call. On error nothing has changed and no event was
    /// deposited.
    pub(crate) fn dispatch(
        &mut self,
        origin: Origin,
        call: MarketCall,
        ctx: BlockCtx,
    ) -> Result<(), DispatchError> {
        match call {
            MarketCall::CreateTaskIntent {
                lane,
                priority,
                model_requirements,
                input_cid,
                compute_budget,
                deadline_blocks,
                escrow_amount,
            } => self.create_task_intent(
                origin.signed()?,
                lane,
                priority,
                model_requirements,
                input_cid,
                compute_budget,
                deadline_blocks,
                escrow_amount,
                ctx,
            ),
            MarketCall::AcceptAssignment { task_id } => {
                origin.signed()?;
                self.accept_assignment(task_id, ctx)
            }
            MarketCall::StartTask { task_id } => self.start_task(origin.signed()?, task_id),
            MarketCall::SubmitResult {
                task_id,
                output_cid,
                attestation_cid,
            } => self.submit_result(origin.signed()?, task_id, output_cid, attestation_cid, ctx),
            MarketCall::FailTask { task_id, reason } => {
                self.fail_task(origin.signed()?, task_id, reason)
            }
            MarketCall::RegisterRenderer {
                renderer_id,
                lane,
                deterministic,
                max_latency_ms,
                vram_required_mb,
            } => {
                ensure_root(origin)?;
                let info = RendererInfo {
                    lane,
                    deterministic,
                    max_latency_ms,
                    vram_required_mb,
                };
                self.check_renderer(&renderer_id, &info)?;
                self.renderers.insert(renderer_id.clone(), info);
                self.deposit(MarketEvent::RendererRegistered { renderer_id, lane });
                Ok(())
            }
            MarketCall::DeregisterRenderer { renderer_id } => {
                ensure_root(origin)?;
                if self.renderers.remove(&renderer_id).is_none() {
                    return Err(MarketError::RendererNotRegistered.into());
                }
                self.deposit(MarketEvent::RendererDeregistered { renderer_id });
                Ok(())
            }
            MarketCall::SubmitAttestation {
                task_id,
                score,
                attestation_cid,
            } => self.submit_attestation(origin.signed()?, task_id, score, attestation_cid, ctx),
            MarketCall::FinalizeTask { task_id } => {
                origin.signed()?;
                self.finalize_task(task_id, ctx)
            }
        }
    }

    /// Checks a call's arguments against their bounded types, as decoding
    /// does on a real chain: a call that fails here never reaches dispatch.
    pub(crate) fn check_call_bounds(call: &MarketCall) -> Result<(), String> {
        fn bound(what: &str, v: &[u8], max: usize) -> Result<(), String> {
            if v.len() > max {
                Err(format!("{what} is {} bytes, bound is {max}", v.len()))
            } else {
                Ok(())
            }
        }
        match call {
            MarketCall::CreateTaskIntent {
                model_requirements,
                input_cid,
                ..
            } => {
                bound("model_requirements", model_requirements, MAX_MODEL_ID_LEN)?;
                bound("input_cid", input_cid, MAX_CID_LEN)
            }
            MarketCall::SubmitResult {
                output_cid,
                attestation_cid,
                ..
            } => {
                bound("output_cid", output_cid, MAX_CID_LEN)?;
                attestation_cid
                    .as_deref()
                    .map_or(Ok(()), |a| bound("attestation_cid", a, MAX_CID_LEN))
            }
            MarketCall::SubmitAttestation {
                attestation_cid, ..
            } => attestation_cid
                .as_deref()
                .map_or(Ok(()), |a| bound("attestation_cid", a, MAX_CID_LEN)),
            MarketCall::RegisterRenderer { renderer_id, .. }
            | MarketCall::DeregisterRenderer { renderer_id } => {
                bound("renderer_id", renderer_id, MAX_MODEL_ID_LEN)
            }
            MarketCall::AcceptAssignment { .. }
            | MarketCall::StartTask { .. }
            | MarketCall::FailTask { .. }
            | MarketCall::FinalizeTask { .. } => Ok(()),
        }
    }

    fn check_renderer(&self, id: &[u8], info: &RendererInfo) -> Result<(), MarketError> {
        if id.is_empty() || id.len() > MAX_MODEL_ID_LEN {
            return Err(MarketError::InvalidRendererId);
        }
        if self.renderers.contains_key(id) {
            return Err(MarketError::RendererAlreadyRegistered);
        }
        if self.renderers.len() >= self.params.max_renderers as usize {
            return Err(MarketError::RendererRegistryFull);
        }
        let max_latency = match info.lane {
            Lane::Lane0 => {
                if !info.deterministic {
                    return Err(MarketError::RendererNotDeterministic);
                }
                self.params.max_lane0_latency_ms
            }
            Lane::Lane1 => self.params.max_lane1_latency_ms,
        };
        if info.max_latency_ms > max_latency {
            return Err(MarketError::RendererLatencyExceeded);
        }
        if info.vram_required_mb > self.params.max_renderer_vram_mb {
            return Err(MarketError::RendererVramExceeded);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_task_intent(
        &mut self,
        requester: AccountId,
        lane: Lane,
        priority: Priority,
        model_requirements: Vec<u8>,
        input_cid: Vec<u8>,
        compute_budget: u64,
        deadline_blocks: BlockNumber,
        escrow: Balance,
        ctx: BlockCtx,
    ) -> Result<(), DispatchError> {
        if deadline_blocks == 0 {
            return Err(MarketError::InvalidDeadline.into());
        }
        if escrow < self.params.min_escrow {
            return Err(MarketError::InsufficientEscrow.into());
        }
        let renderer = self
            .renderers
            .get(&model_requirements)
            .ok_or(MarketError::RendererNotRegistered)?;
        if renderer.lane != lane {
            return Err(MarketError::RendererLaneMismatch.into());
        }
        if self.open_tasks(lane).len() >= self.params.max_pending_tasks as usize {
            return Err(MarketError::TooManyPendingTasks.into());
        }
        let deadline = ctx
            .number
            .checked_add(deadline_blocks)
            .ok_or(MarketError::Overflow)?;
        let next_id = self
            .next_task_id
            .checked_add(1)
            .ok_or(MarketError::Overflow)?;
        let acc = self.account(&requester);
        if acc.free < escrow {
            return Err(MarketError::InsufficientBalance.into());
        }
        // All checks passed: apply.
        let id = TaskId(self.next_task_id);
        self.next_task_id = next_id;
        let acc = self.accounts.entry(requester).or_default();
        acc.free -= escrow;
        acc.reserved += escrow;
        match lane {
            Lane::Lane0 => self.open_lane0.push(id),
            Lane::Lane1 => self.open_lane1.push(id),
        }
        self.tasks.insert(
            id,
            TaskIntent {
                id,
                lane,
                priority,
                requester,
                executor: None,
                status: TaskStatus::Open,
                escrow,
                created_at: ctx.number,
                deadline,
                model_requirements: model_requirements.clone(),
                input_cid,
                compute_budget,
                output_cid: None,
                attestation_cid: None,
            },
        );
        self.touched.insert(id);
        self.deposit(MarketEvent::TaskCreated {
            task_id: id,
            requester,
            escrow,
            deadline,
            lane,
            priority,
            model_requirements,
        });
        Ok(())
    }

    /// The executor the chain picks for a task: stake-weighted among the
    /// lane's executors (the first `MaxAssignmentCandidates` by account id),
    /// from a seed derived from the parent block hash and the task id.
    pub(crate) fn select_executor(
        &self,
        lane: Lane,
        task_id: TaskId,
        parent_hash: BlockHash,
    ) -> Option<AccountId> {
        let candidates: Vec<(AccountId, Balance)> = self
            .executors
            .iter()
            .filter(|(_, e)| e.stake > 0 && e.lanes.contains(&lane))
            .take(self.params.max_assignment_candidates as usize)
            .map(|(a, e)| (*a, e.stake))
            .collect();
        let total: Balance = candidates.iter().map(|(_, s)| *s).sum();
        if total == 0 {
            return None;
        }
        let mut seed_input = b"nsn-task-market/assign".to_vec();
        seed_input.extend_from_slice(&parent_hash.0);
        seed_input.extend_from_slice(&task_id.encode());
        let seed = blake2_256(&seed_input);
        let mut r = u128::from_le_bytes(seed[..16].try_into().ok()?) % total;
        for (who, stake) in candidates {
            if r < stake {
                return Some(who);
            }
            r -= stake;
        }
        None
    }

    fn accept_assignment(&mut self, task_id: TaskId, ctx: BlockCtx) -> Result<(), DispatchError> {
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        match task.status {
            TaskStatus::Open => {}
            TaskStatus::Assigned | TaskStatus::Executing => {
                return Err(MarketError::TaskAlreadyAssigned.into());
            }
            _ => return Err(MarketError::TaskNotOpen.into()),
        }
        let lane = task.lane;
        if lane == Lane::Lane1 {
            if self.lane0_open() {
                return Err(MarketError::Lane0Priority.into());
            }
            if self.assigned_lane1.len() >= self.params.max_assigned_lane1_tasks as usize {
                return Err(MarketError::TooManyAssignedLane1Tasks.into());
            }
        }
        let executor = self
            .select_executor(lane, task_id, ctx.parent_hash)
            .ok_or(MarketError::NoEligibleExecutors)?;
        match lane {
            Lane::Lane0 => self.open_lane0.retain(|id| *id != task_id),
            Lane::Lane1 => {
                self.open_lane1.retain(|id| *id != task_id);
                self.assigned_lane1.push(task_id);
                self.assigned_log.push((task_id, true));
            }
        }
        if let Some(t) = self.task_mut(task_id) {
            t.status = TaskStatus::Assigned;
            t.executor = Some(executor);
        }
        self.deposit(MarketEvent::TaskAssigned { task_id, executor });
        Ok(())
    }

    fn start_task(&mut self, who: AccountId, task_id: TaskId) -> Result<(), DispatchError> {
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        if task.status != TaskStatus::Assigned {
            return Err(MarketError::TaskNotAssigned.into());
        }
        if task.executor != Some(who) {
            return Err(MarketError::NotExecutor.into());
        }
        if task.lane == Lane::Lane1 && self.lane0_open() {
            return Err(MarketError::Lane0Priority.into());
        }
        self.set_status(task_id, TaskStatus::Executing);
        self.deposit(MarketEvent::TaskStarted {
            task_id,
            executor: who,
        });
        Ok(())
    }

    fn submit_result(
        &mut self,
        who: AccountId,
        task_id: TaskId,
        output_cid: Vec<u8>,
        attestation_cid: Option<Vec<u8>>,
        ctx: BlockCtx,
    ) -> Result<(), DispatchError> {
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        if !task.status.is_in_hand() {
            return Err(MarketError::TaskNotExecuting.into());
        }
        if task.executor != Some(who) {
            return Err(MarketError::NotExecutor.into());
        }
        if task.lane == Lane::Lane0 {
            match &attestation_cid {
                None => return Err(MarketError::MissingAttestation.into()),
                Some(a) if a.is_empty() => return Err(MarketError::InvalidAttestationCid.into()),
                Some(_) => {}
            }
        }
        if self.pending_verification.len() >= self.params.max_pending_tasks as usize {
            return Err(MarketError::TooManyPendingVerifications.into());
        }
        let verification_deadline = ctx
            .number
            .checked_add(self.params.verification_period)
            .ok_or(MarketError::Overflow)?;
        let lane = task.lane;
        let quorum = self.params.verification_quorum;
        if lane == Lane::Lane1 {
            self.assigned_lane1.retain(|id| *id != task_id);
            self.assigned_log.push((task_id, false));
        }
        self.pending_verification.push(task_id);
        self.required_quorum.insert(task_id, quorum);
        self.verification_deadline
            .insert(task_id, verification_deadline);
        if let Some(t) = self.task_mut(task_id) {
            t.status = TaskStatus::Submitted;
            t.output_cid = Some(output_cid.clone());
            t.attestation_cid = attestation_cid.clone();
        }
        self.deposit(MarketEvent::TaskSubmitted {
            task_id,
            executor: who,
            output_cid,
            attestation_cid,
            verification_deadline,
            required_quorum: quorum,
        });
        Ok(())
    }

    fn fail_task(
        &mut self,
        who: AccountId,
        task_id: TaskId,
        reason: FailReason,
    ) -> Result<(), DispatchError> {
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        match task.status {
            TaskStatus::Open => {
                if task.requester != who {
                    return Err(MarketError::NotRequester.into());
                }
            }
            TaskStatus::Assigned
            | TaskStatus::Executing
            | TaskStatus::Submitted
            | TaskStatus::PendingVerification => {
                if task.requester != who && task.executor != Some(who) {
                    return Err(MarketError::NotExecutor.into());
                }
            }
            TaskStatus::Completed
            | TaskStatus::Failed
            | TaskStatus::Expired
            | TaskStatus::Verified
            | TaskStatus::Rejected => return Err(MarketError::TaskNotExecuting.into()),
        }
        let slash = if reason.slashes_executor() {
            task.executor
        } else {
            None
        };
        self.close_task(task_id, TaskStatus::Failed);
        if let Some(executor) = slash {
            self.slash(executor);
        }
        self.deposit(MarketEvent::TaskFailed { task_id, reason });
        Ok(())
    }

    fn submit_attestation(
        &mut self,
        validator: AccountId,
        task_id: TaskId,
        score: u8,
        attestation_cid: Option<Vec<u8>>,
        ctx: BlockCtx,
    ) -> Result<(), DispatchError> {
        if !self.validators.contains(&validator) {
            return Err(MarketError::NotValidator.into());
        }
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        if !matches!(
            task.status,
            TaskStatus::Submitted | TaskStatus::PendingVerification
        ) {
            return Err(MarketError::TaskNotSubmitted.into());
        }
        let deadline = self
            .verification_deadline
            .get(&task_id)
            .copied()
            .unwrap_or(0);
        if ctx.number > deadline {
            return Err(MarketError::VerificationDeadlinePassed.into());
        }
        if score > 100 {
            return Err(MarketError::InvalidAttestationScore.into());
        }
        if attestation_cid.as_ref().is_some_and(Vec::is_empty) {
            return Err(MarketError::InvalidAttestationCid.into());
        }
        let existing = self.attestations(task_id);
        if existing.iter().any(|a| a.validator == validator) {
            return Err(MarketError::DuplicateAttestation.into());
        }
        if existing.len() >= self.params.max_attestations as usize {
            return Err(MarketError::TooManyAttestations.into());
        }
        let count = existing.len() + 1;
        let quorum = self
            .required_quorum
            .get(&task_id)
            .copied()
            .unwrap_or(self.params.verification_quorum);
        let reaches_quorum = count >= quorum as usize;
        if reaches_quorum {
            self.check_settlement(task_id)?;
        }
        self.attestations
            .entry(task_id)
            .or_default()
            .push(Attestation {
                validator,
                score,
                attestation_cid,
            });
        self.set_status(task_id, TaskStatus::PendingVerification);
        self.deposit(MarketEvent::AttestationSubmitted {
            task_id,
            validator,
            score,
        });
        if reaches_quorum {
            self.settle(task_id);
        }
        Ok(())
    }

    fn finalize_task(&mut self, task_id: TaskId, ctx: BlockCtx) -> Result<(), DispatchError> {
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        if !matches!(
            task.status,
            TaskStatus::Submitted | TaskStatus::PendingVerification
        ) {
            return Err(MarketError::TaskNotSubmitted.into());
        }
        let quorum = self
            .required_quorum
            .get(&task_id)
            .copied()
            .unwrap_or(self.params.verification_quorum);
        if self.attestations(task_id).len() >= quorum as usize {
            self.check_settlement(task_id)?;
            self.settle(task_id);
            return Ok(());
        }
        let deadline = self
            .verification_deadline
            .get(&task_id)
            .copied()
            .unwrap_or(0);
        if ctx.number <= deadline {
            return Err(MarketError::VerificationPending.into());
        }
        self.reject_timed_out(task_id);
        Ok(())
    }

    // ---- settlement -------------------------------------------------------

    /// The average of a task's attestation scores (floor), if any.
    fn average_score(&self, task_id: TaskId) -> Option<u8> {
        let atts = self.attestations(task_id);
        if atts.is_empty() {
            return None;
        }
        let sum: u32 = atts.iter().map(|a| u32::from(a.score)).sum();
        // Scores are ≤ 100, so the average is too.
        u8::try_from(sum / atts.len() as u32).ok()
    }

    /// Splits an escrow 70 / 20 / 10: executor, treasury, burned. The two
    /// shares are floored; the burn takes the remainder, so nothing is lost.
    pub fn payment_split(escrow: Balance) -> (Balance, Balance, Balance) {
        let executor = escrow / 100 * 70 + escrow % 100 * 70 / 100;
        let treasury = escrow / 100 * 20 + escrow % 100 * 20 / 100;
        (executor, treasury, escrow - executor - treasury)
    }

    /// Checks that settling a task at quorum cannot fail.
    fn check_settlement(&self, task_id: TaskId) -> Result<(), DispatchError> {
        let Some(task) = self.tasks.get(&task_id) else {
            return Err(MarketError::TaskNotFound.into());
        };
        let (_, _, burn) = Self::payment_split(task.escrow);
        if self.total_issuance < burn {
            return Err(MarketError::BurnFailed.into());
        }
        Ok(())
    }

    /// Settles a task that reached quorum: pays on a passing average, refunds
    /// the requester on a failing one.
    fn settle(&mut self, task_id: TaskId) {
        let Some(task) = self.tasks.get(&task_id).cloned() else {
            return;
        };
        let average = self.average_score(task_id).unwrap_or(0);
        self.remove_verification(task_id);
        if average >= self.params.min_attestation_score {
            let (to_executor, to_treasury, burn) = Self::payment_split(task.escrow);
            let requester = self.accounts.entry(task.requester).or_default();
            requester.reserved = requester.reserved.saturating_sub(task.escrow);
            if let Some(executor) = task.executor {
                self.accounts.entry(executor).or_default().free += to_executor;
            }
            self.accounts.entry(self.treasury).or_default().free += to_treasury;
            self.total_issuance -= burn;
            self.set_status(task_id, TaskStatus::Verified);
            self.deposit(MarketEvent::TaskVerified {
                task_id,
                executor: task.executor.unwrap_or(task.requester),
                payment: to_executor,
                average_score: average,
            });
        } else {
            self.unreserve(task.requester, task.escrow);
            self.set_status(task_id, TaskStatus::Rejected);
            self.deposit(MarketEvent::TaskRejected {
                task_id,
                executor: task.executor,
                average_score: Some(average),
                deadline_exceeded: false,
            });
        }
    }

    fn reject_timed_out(&mut self, task_id: TaskId) {
        let Some(task) = self.tasks.get(&task_id).cloned() else {
            return;
        };
        let average_score = self.average_score(task_id);
        self.remove_verification(task_id);
        self.unreserve(task.requester, task.escrow);
        self.set_status(task_id, TaskStatus::Rejected);
        self.deposit(MarketEvent::TaskRejected {
            task_id,
            executor: task.executor,
            average_score,
            deadline_exceeded: true,
        });
    }

    fn remove_verification(&mut self, task_id: TaskId) {
        self.pending_verification.retain(|id| *id != task_id);
        self.verification_deadline.remove(&task_id);
        self.required_quorum.remove(&task_id);
    }

    /// Ends a task that is not settled by verification: returns its escrow
    /// and takes it off every list.
    fn close_task(&mut self, task_id: TaskId, status: TaskStatus) {
        let Some(task) = self.tasks.get(&task_id).cloned() else {
            return;
        };
        match task.lane {
            Lane::Lane0 => self.open_lane0.retain(|id| *id != task_id),
            Lane::Lane1 => self.open_lane1.retain(|id| *id != task_id),
        }
        if self.assigned_lane1.contains(&task_id) {
            self.assigned_lane1.retain(|id| *id != task_id);
            self.assigned_log.push((task_id, false));
        }
        self.remove_verification(task_id);
        self.unreserve(task.requester, task.escrow);
        self.set_status(task_id, status);
    }

    fn unreserve(&mut self, who: AccountId, amount: Balance) {
        let acc = self.accounts.entry(who).or_default();
        let back = amount.min(acc.reserved);
        acc.reserved -= back;
        acc.free += back;
    }

    /// Takes `slash_amount` (at most the whole stake) from an executor's
    /// stake and pays it to the treasury.
    fn slash(&mut self, who: AccountId) {
        let Some(info) = self.executors.get_mut(&who) else {
            return;
        };
        let amount = self.params.slash_amount.min(info.stake);
        info.stake -= amount;
        let acc = self.accounts.entry(who).or_default();
        acc.reserved = acc.reserved.saturating_sub(amount);
        self.accounts.entry(self.treasury).or_default().free += amount;
    }

    // ---- hooks ------------------------------------------------------------

    /// The per-block hooks, each bounded: expire open tasks past their
    /// deadline, reject results whose verification window ended, and preempt
    /// assigned Lane 1 work while Lane 0 tasks are open.
    pub(crate) fn on_initialize(&mut self, now: BlockNumber) {
        self.set_phase(Phase::Initialization);

        let max_expired = self.params.max_expired_per_block as usize;
        let expired: Vec<TaskId> = self
            .open_lane0
            .iter()
            .chain(&self.open_lane1)
            .filter(|id| self.tasks.get(id).is_some_and(|t| t.deadline < now))
            .take(max_expired)
            .copied()
            .collect();
        for task_id in expired {
            self.close_task(task_id, TaskStatus::Expired);
            self.deposit(MarketEvent::TaskExpired { task_id });
        }

        let timed_out: Vec<TaskId> = self
            .pending_verification
            .iter()
            .filter(|id| self.verification_deadline.get(id).is_some_and(|d| *d < now))
            .take(max_expired)
            .copied()
            .collect();
        for task_id in timed_out {
            self.reject_timed_out(task_id);
        }

        if self.lane0_open() {
            let preempted: Vec<TaskId> = self
                .assigned_lane1
                .iter()
                .take(self.params.max_preemptions_per_block as usize)
                .copied()
                .collect();
            for task_id in preempted {
                self.close_task(task_id, TaskStatus::Failed);
                self.deposit(MarketEvent::TaskFailed {
                    task_id,
                    reason: FailReason::Preempted,
                });
            }
        }
    }
}

fn ensure_root(origin: Origin) -> Result<(), DispatchError> {
    match origin {
        Origin::Root => Ok(()),
        Origin::Signed(_) => Err(DispatchError::BadOrigin),
    }
}

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
            let pick = m.select_executor(Lane::Lane1, TaskId(i), parent).unwrap();
            assert_eq!(
                Some(pick),
                m.select_executor(Lane::Lane1, TaskId(i), parent)
            );
            picks[usize::from(pick == b)] += 1;
        }
        // 90 % / 10 % of 2000, with a generous margin.
        assert!((1700..=1900).contains(&picks[0]), "{picks:?}");
        assert_eq!(
            m.select_executor(Lane::Lane0, TaskId(1), BlockHash::default()),
            None
        );
    }
}
