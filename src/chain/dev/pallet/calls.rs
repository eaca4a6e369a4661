//! The pallet's calls: origin rules, checks before changes, events.

use super::*;

impl Market {
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
                    registered_at: ctx.number,
                };
                self.register_renderer(renderer_id, info)?;
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

    /// Registers a renderer: what `register_renderer` does after its origin
    /// check, and what genesis does for its renderers.
    pub(super) fn register_renderer(
        &mut self,
        renderer_id: Vec<u8>,
        info: RendererInfo,
    ) -> Result<(), MarketError> {
        self.check_renderer(&renderer_id, &info)?;
        self.deposit(MarketEvent::RendererRegistered {
            renderer_id: renderer_id.clone(),
            lane: info.lane,
            deterministic: info.deterministic,
            max_latency_ms: info.max_latency_ms,
            vram_required_mb: info.vram_required_mb,
        });
        self.renderers.insert(renderer_id, info);
        Ok(())
    }

    fn check_renderer(&self, id: &[u8], info: &RendererInfo) -> Result<(), MarketError> {
        if id.is_empty() || id.len() > MAX_MODEL_ID_LEN {
            return Err(MarketError::InvalidRendererId);
        }
        if self.renderers.contains_key(id) {
            return Err(MarketError::RendererAlreadyRegistered);
        }
        if self.renderers.len() >= self.params.max_registered_renderers as usize {
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
    pub(super) fn create_task_intent(
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
        self.insert_open(lane, id);
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

    /// The executor the chain picks: stake-weighted among the lane's
    /// executors (the first `MaxAssignmentCandidates` by account id), from a
    /// seed derived from the parent block hash under a fixed subject — so
    /// every assignment in one block goes to the same executor, as on the
    /// deployed pallet.
    pub(crate) fn select_executor(&self, lane: Lane, parent_hash: BlockHash) -> Option<AccountId> {
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

    pub(super) fn accept_assignment(
        &mut self,
        task_id: TaskId,
        ctx: BlockCtx,
    ) -> Result<(), DispatchError> {
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        if task.status != TaskStatus::Open {
            return Err(MarketError::TaskNotOpen.into());
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
            .select_executor(lane, ctx.parent_hash)
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

    pub(super) fn start_task(
        &mut self,
        who: AccountId,
        task_id: TaskId,
    ) -> Result<(), DispatchError> {
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

    pub(super) fn submit_result(
        &mut self,
        who: AccountId,
        task_id: TaskId,
        output_cid: Vec<u8>,
        attestation_cid: Option<Vec<u8>>,
        ctx: BlockCtx,
    ) -> Result<(), DispatchError> {
        let task = self.tasks.get(&task_id).ok_or(MarketError::TaskNotFound)?;
        if !task.status.is_in_hand() {
            return Err(MarketError::TaskNotAssigned.into());
        }
        if task.executor != Some(who) {
            return Err(MarketError::NotExecutor.into());
        }
        match &attestation_cid {
            None if task.lane == Lane::Lane0 => return Err(MarketError::MissingAttestation.into()),
            // Refused on both lanes, as the deployed pallet does.
            Some(a) if a.is_empty() => return Err(MarketError::InvalidAttestationCid.into()),
            _ => {}
        }
        if self.pending_verification.len() >= self.params.max_pending_verifications as usize {
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

    pub(super) fn fail_task(
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
            | TaskStatus::Rejected => return Err(MarketError::TaskNotAssigned.into()),
        }
        let slash = if reason.slashes_executor() {
            task.executor.map(|executor| {
                let cause = if executor == who {
                    SlashCause::ExecutorFailTask
                } else {
                    SlashCause::RequesterFailTask
                };
                (executor, cause)
            })
        } else {
            None
        };
        self.close_task(task_id, TaskStatus::Failed);
        if let Some((executor, cause)) = slash {
            self.slash(executor, self.params.task_abandonment_slash, cause);
        }
        self.deposit(MarketEvent::TaskFailed { task_id, reason });
        Ok(())
    }

    pub(super) fn submit_attestation(
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
        // The deadline block belongs to the hook, which rejects first.
        if ctx.number >= deadline {
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

    pub(super) fn finalize_task(
        &mut self,
        task_id: TaskId,
        ctx: BlockCtx,
    ) -> Result<(), DispatchError> {
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
        if ctx.number >= deadline {
            // Past the deadline the task is rejected, quorum or not.
            self.reject_timed_out(task_id);
            return Ok(());
        }
        let quorum = self
            .required_quorum
            .get(&task_id)
            .copied()
            .unwrap_or(self.params.verification_quorum);
        if self.attestations(task_id).len() < quorum as usize {
            return Err(MarketError::VerificationPending.into());
        }
        self.check_settlement(task_id)?;
        self.settle(task_id);
        Ok(())
    }
}

fn ensure_root(origin: Origin) -> Result<(), DispatchError> {
    match origin {
        Origin::Root => Ok(()),
        Origin::Signed(_) => Err(DispatchError::BadOrigin),
    }
}
