//! The per-block hooks.

use super::*;

impl Market {
    /// The per-block hooks, each bounded, run before the block's
    /// extrinsics: expire open tasks whose deadline is this block or
    /// earlier, reject (and slash) results whose verification deadline is
    /// this block or earlier, and preempt (and slash) assigned Lane 1 work
    /// while Lane 0 tasks are open.
    pub(crate) fn on_initialize(&mut self, now: BlockNumber) {
        self.set_phase(Phase::Initialization);

        let max_expired = self.params.max_expired_per_block as usize;
        let expired: Vec<TaskId> = self
            .open_lane0
            .iter()
            .chain(&self.open_lane1)
            .filter(|id| self.tasks.get(id).is_some_and(|t| t.deadline <= now))
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
            .filter(|id| {
                self.verification_deadline
                    .get(id)
                    .is_some_and(|d| *d <= now)
            })
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
                let executor = self.tasks.get(&task_id).and_then(|t| t.executor);
                self.close_task(task_id, TaskStatus::Failed);
                if let Some(executor) = executor {
                    self.slash(
                        executor,
                        self.params.task_abandonment_slash,
                        SlashCause::PreemptionHook,
                    );
                }
                self.deposit(MarketEvent::TaskFailed {
                    task_id,
                    reason: FailReason::Preempted,
                });
            }
        }
    }
}
