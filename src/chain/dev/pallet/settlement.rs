//! Settlement: verification outcomes, payment, refunds and slashes.

use super::*;

impl Market {
    /// The average of a task's attestation scores (floor), if any.
    pub(super) fn average_score(&self, task_id: TaskId) -> Option<u8> {
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
    pub(super) fn check_settlement(&self, task_id: TaskId) -> Result<(), DispatchError> {
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
    pub(super) fn settle(&mut self, task_id: TaskId) {
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
            if let Some(executor) = task.executor {
                self.slash(
                    executor,
                    self.params.verification_failure_slash,
                    SlashCause::LowScore,
                );
            }
            self.set_status(task_id, TaskStatus::Rejected);
            self.deposit(MarketEvent::TaskRejected {
                task_id,
                executor: task.executor,
                average_score: Some(average),
                deadline_exceeded: false,
            });
        }
    }

    pub(super) fn reject_timed_out(&mut self, task_id: TaskId) {
        let Some(task) = self.tasks.get(&task_id).cloned() else {
            return;
        };
        let average_score = self.average_score(task_id);
        self.remove_verification(task_id);
        self.unreserve(task.requester, task.escrow);
        if let Some(executor) = task.executor {
            self.slash(
                executor,
                self.params.verification_failure_slash,
                SlashCause::VerificationTimeout,
            );
        }
        self.set_status(task_id, TaskStatus::Rejected);
        self.deposit(MarketEvent::TaskRejected {
            task_id,
            executor: task.executor,
            average_score,
            deadline_exceeded: true,
        });
    }

    pub(super) fn remove_verification(&mut self, task_id: TaskId) {
        self.pending_verification.retain(|id| *id != task_id);
        self.verification_deadline.remove(&task_id);
        self.required_quorum.remove(&task_id);
    }

    /// Ends a task that is not settled by verification: returns its escrow
    /// and takes it off every list.
    pub(super) fn close_task(&mut self, task_id: TaskId, status: TaskStatus) {
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

    pub(super) fn unreserve(&mut self, who: AccountId, amount: Balance) {
        let acc = self.accounts.entry(who).or_default();
        let back = amount.min(acc.reserved);
        acc.reserved -= back;
        acc.free += back;
    }

    /// Takes `amount` (at most the whole stake) from an executor's stake,
    /// pays it to the treasury, and counts the slash by its cause.
    pub(super) fn slash(&mut self, who: AccountId, amount: Balance, cause: SlashCause) {
        let Some(info) = self.executors.get_mut(&who) else {
            return;
        };
        let amount = amount.min(info.stake);
        info.stake -= amount;
        let acc = self.accounts.entry(who).or_default();
        acc.reserved = acc.reserved.saturating_sub(amount);
        self.accounts.entry(self.treasury).or_default().free += amount;
        *self
            .slashes
            .entry(who)
            .or_default()
            .entry(cause)
            .or_default() += 1;
    }
}
