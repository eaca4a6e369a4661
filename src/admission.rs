//! Admission: what is checked before a task's `start_task` is sent, so that
//! nothing the node cannot or should not run is ever started (a started task
//! that fails may cost the node its stake).
//!
//! A task is **admitted** when its model is one the sidecar serves, the
//! sidecar is healthy, its deadline leaves room for the model's expected
//! latency plus a margin for submission, and its escrow is at least the
//! node's floor. A task that fails for a reason of the *task's* is failed at
//! once with the non-slashing reason that fits — a model the sidecar does
//! not serve is `InvalidInput`, a deadline out of reach `DeadlineExceeded`,
//! an escrow under the floor `Other` — which returns the requester's
//! escrow. One that fails for a reason of *ours* (the sidecar down) is held,
//! not started, until the sidecar is healthy again.
//!
//! [`watch_sidecars`] keeps the admission's view current: it asks each
//! sidecar's health and capabilities, each call with a deadline; a run that
//! finds a sidecar unreachable takes it out of the node's set at once, and
//! the node is unhealthy while none is up ([`Admission::set_healthy`]).
//!
//! ```
//! use nsn_lane1::admission::{Admission, AdmissionPolicy, Verdict};
//! use nsn_lane1::task::{AccountId, Cid, Lane, ModelId, Priority, Task, TaskId, UNIT};
//!
//! let admission = Admission::new(AdmissionPolicy::default());
//! admission.set_served([(ModelId::new("sha256").unwrap(), 1_000)]);
//! let task = Task {
//!     id: TaskId(1), lane: Lane::Lane1, priority: Priority::Normal,
//!     model: ModelId::new("llama").unwrap(),
//!     input_cid: Cid::parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy").unwrap(),
//!     deadline: 1_000, compute_budget: 0, escrow: UNIT, requester: AccountId::ALICE,
//! };
//! assert!(matches!(admission.check(&task, 10), Verdict::Refuse { .. }));
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::task::{Balance, BlockNumber, FailReason, Lane, ModelId, Task};

/// The node's admission rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionPolicy {
    /// The chain's block time, to turn a model's latency into blocks.
    pub block_time: Duration,
    /// Blocks kept free after a run for `submit_result` to land.
    pub submission_margin: BlockNumber,
    /// The least escrow the node works for.
    pub min_escrow: Balance,
}

impl Default for AdmissionPolicy {
    /// 6 s blocks (the NSN chain), two blocks for submission, any escrow.
    fn default() -> Self {
        AdmissionPolicy {
            block_time: Duration::from_secs(6),
            submission_margin: 2,
            min_escrow: 0,
        }
    }
}

/// What admission says about a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start it.
    Admit,
    /// Do not run it: the task's own fault; fail it with `reason` (never a
    /// slashing one).
    Refuse {
        /// The reason to give the chain.
        reason: FailReason,
        /// What was wrong.
        cause: RefuseCause,
    },
    /// Not now: the node cannot run anything for a while.
    Hold {
        /// Why.
        cause: HoldCause,
    },
}

/// What is wrong with a task admission refuses: each is the task's own
/// fault, and none is a slashing reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefuseCause {
    /// Not Lane 1 work.
    #[error("a {0} task is not Lane 1 work")]
    NotLane1(Lane),
    /// A model the sidecar does not serve.
    #[error("the sidecar does not serve model {0}")]
    ModelNotServed(ModelId),
    /// Its deadline cannot be met.
    #[error(
        "deadline block {deadline} is out of reach: head {head}, {run_blocks} blocks to run, {margin} to submit"
    )]
    DeadlineOutOfReach {
        /// The task's deadline block.
        deadline: BlockNumber,
        /// The finalized head it was judged at.
        head: BlockNumber,
        /// Blocks the model may take.
        run_blocks: BlockNumber,
        /// Blocks kept for submission.
        margin: BlockNumber,
    },
    /// Less escrow than the node works for.
    #[error("escrow {escrow} is under the node's floor {floor}")]
    EscrowUnderFloor {
        /// The task's escrow.
        escrow: Balance,
        /// The node's floor.
        floor: Balance,
    },
}

/// Why a task is held: neither run nor failed, tried again later. None of
/// these is the task's fault, and none is reported to the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HoldCause {
    /// The sidecar does not answer: the node's intake waits for it.
    SidecarUnreachable,
    /// The node's set-up failed the run (a plugin runner not configured, a
    /// policy, VRAM), or the sidecar failed it in words the node does not
    /// know: this task waits, on a backoff; the others go on.
    Setup(crate::sidecar::client::Blame),
    /// The stake breaker is open: no new work, no slashing call.
    BreakerOpen,
}

impl std::fmt::Display for HoldCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldCause::SidecarUnreachable => f.write_str("the sidecar does not answer"),
            HoldCause::Setup(blame) => {
                write!(f, "the sidecar failed the run ({blame}), not the task")
            }
            HoldCause::BreakerOpen => f.write_str("the stake breaker is open"),
        }
    }
}

/// Why the node is not ready to take work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The sidecar does not answer.
    #[error("the sidecar does not answer")]
    SidecarUnreachable,
    /// The stake breaker is open.
    #[error("the stake breaker is open: slashing verdicts reached its bound")]
    BreakerOpen,
    /// Tasks are held for the set-up's faults.
    #[error("{0} task(s) held: the sidecar fails runs for reasons of the node's set-up")]
    SetupFaults(usize),
    /// The chain's data cannot be decoded: the node does not go past it.
    #[error("the chain cannot be read: {0}")]
    ChainUnreadable(String),
    /// Another process signs with this node's key.
    #[error("another process signs with this key (it used nonce {0}); not signing")]
    ForeignSigner(u64),
}

#[derive(Debug)]
struct Inner {
    policy: AdmissionPolicy,
    /// Lane 1 models the sidecar serves, with their worst-case latency in
    /// ms (`None`: not known yet — nothing is refused for its model).
    served: RwLock<Option<HashMap<ModelId, u32>>>,
    healthy: watch::Sender<bool>,
    breaker: crate::breaker::StakeBreaker,
    /// Tasks held now for their runs' set-up faults.
    setup_held: std::sync::Mutex<std::collections::HashSet<crate::task::TaskId>>,
    /// Why the chain cannot be read now, if it cannot.
    chain_unreadable: std::sync::Mutex<Option<String>>,
    /// A nonce another process signed with our key, once one is seen.
    foreign_signer: std::sync::Mutex<Option<u64>>,
}

/// The node's admission; clones share one view of the sidecar.
#[derive(Clone, Debug)]
pub struct Admission {
    inner: Arc<Inner>,
}

impl Admission {
    /// Admission by `policy`; the sidecar counts as healthy until told
    /// otherwise, and every model as served until the sidecar has said.
    pub fn new(policy: AdmissionPolicy) -> Self {
        Self::with_breaker(
            policy,
            crate::breaker::StakeBreaker::new(Default::default()),
        )
    }

    /// Admission by `policy`, with this stake breaker.
    pub fn with_breaker(policy: AdmissionPolicy, breaker: crate::breaker::StakeBreaker) -> Self {
        Admission {
            inner: Arc::new(Inner {
                policy,
                served: RwLock::new(None),
                healthy: watch::channel(true).0,
                breaker,
                setup_held: Default::default(),
                chain_unreadable: Default::default(),
                foreign_signer: Default::default(),
            }),
        }
    }

    /// The stake breaker.
    pub fn breaker(&self) -> &crate::breaker::StakeBreaker {
        &self.inner.breaker
    }

    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<crate::task::TaskId>> {
        self.inner
            .setup_held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `task` is held (`true`) or no longer held (`false`)
    /// for a set-up fault of its run.
    pub fn set_setup_held(&self, task: crate::task::TaskId, held: bool) {
        let mut set = self.held();
        if held {
            set.insert(task);
        } else {
            set.remove(&task);
        }
    }

    /// Records that the chain's data cannot be decoded (`Some`: why), or
    /// can again (`None`).
    pub fn set_chain_unreadable(&self, why: Option<String>) {
        *self
            .inner
            .chain_unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = why;
    }

    /// Records that another process signs with our key (it used `nonce`):
    /// the node is not ready from now on.
    pub fn set_foreign_signer(&self, nonce: u64) {
        *self
            .inner
            .foreign_signer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(nonce);
    }

    /// Whether the node can take work now, and if not, why.
    pub fn readiness(&self) -> Result<(), NotReady> {
        if let Some(nonce) = *self
            .inner
            .foreign_signer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(NotReady::ForeignSigner(nonce));
        }
        if let Some(why) = self
            .inner
            .chain_unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            return Err(NotReady::ChainUnreadable(why));
        }
        if !self.healthy() {
            return Err(NotReady::SidecarUnreachable);
        }
        if self.inner.breaker.is_open() {
            return Err(NotReady::BreakerOpen);
        }
        match self.held().len() {
            0 => Ok(()),
            n => Err(NotReady::SetupFaults(n)),
        }
    }

    /// The rules.
    pub fn policy(&self) -> &AdmissionPolicy {
        &self.inner.policy
    }

    /// Records the Lane 1 models the sidecar serves, with their worst-case
    /// latencies in ms.
    pub fn set_served(&self, models: impl IntoIterator<Item = (ModelId, u32)>) {
        let models = models.into_iter().collect();
        *self
            .inner
            .served
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(models);
    }

    /// True when the sidecar serves `model` (or has not said yet).
    pub fn serves(&self, model: &ModelId) -> bool {
        self.latency_ms(model).is_some()
    }

    /// The model's worst-case latency: `Some(0)` while the sidecar has not
    /// said, `None` when it does not serve the model.
    fn latency_ms(&self, model: &ModelId) -> Option<u32> {
        match &*self
            .inner
            .served
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            None => Some(0),
            Some(models) => models.get(model).copied(),
        }
    }

    /// Records whether the sidecar answers.
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.send_if_modified(|h| {
            let changed = *h != healthy;
            *h = healthy;
            changed
        });
        if !healthy {
            tracing::warn!("sidecar unreachable: holding new tasks until it answers");
        }
    }

    /// True while the sidecar answers.
    pub fn healthy(&self) -> bool {
        *self.inner.healthy.borrow()
    }

    /// Waits until the sidecar answers.
    pub async fn wait_healthy(&self) {
        let mut rx = self.inner.healthy.subscribe();
        // The sender lives in `self`: this cannot fail while we wait.
        let _ = rx.wait_for(|h| *h).await;
    }

    /// Judges `task` at the finalized head `head` (no new work while the
    /// stake breaker is open).
    pub fn check(&self, task: &Task, head: BlockNumber) -> Verdict {
        match self.judge(task, head) {
            Verdict::Admit if self.inner.breaker.is_open() => Verdict::Hold {
                cause: HoldCause::BreakerOpen,
            },
            verdict => verdict,
        }
    }

    fn judge(&self, task: &Task, head: BlockNumber) -> Verdict {
        if task.lane != Lane::Lane1 {
            return Verdict::Refuse {
                reason: FailReason::InvalidInput,
                cause: RefuseCause::NotLane1(task.lane),
            };
        }
        let Some(latency_ms) = self.latency_ms(&task.model) else {
            return Verdict::Refuse {
                reason: FailReason::InvalidInput,
                cause: RefuseCause::ModelNotServed(task.model.clone()),
            };
        };
        if !self.healthy() {
            return Verdict::Hold {
                cause: HoldCause::SidecarUnreachable,
            };
        }
        let policy = &self.inner.policy;
        let block_ms = policy.block_time.as_millis().max(1);
        let run_blocks =
            u32::try_from(u128::from(latency_ms).div_ceil(block_ms)).unwrap_or(u32::MAX);
        let needed = head
            .saturating_add(run_blocks)
            .saturating_add(policy.submission_margin);
        if needed >= task.deadline {
            return Verdict::Refuse {
                reason: FailReason::DeadlineExceeded,
                cause: RefuseCause::DeadlineOutOfReach {
                    deadline: task.deadline,
                    head,
                    run_blocks,
                    margin: policy.submission_margin,
                },
            };
        }
        if task.escrow < policy.min_escrow {
            return Verdict::Refuse {
                reason: FailReason::Other,
                cause: RefuseCause::EscrowUnderFloor {
                    escrow: task.escrow,
                    floor: policy.min_escrow,
                },
            };
        }
        Verdict::Admit
    }
}

/// Keeps `admission`'s view of the node's sidecars current until `stop`:
/// every sidecar's health (and, while it is up, its capabilities and loaded
/// models) every `every`, every second while one is out; healthy while any
/// is up, serving what those that are up serve. A sidecar that leaves the
/// set between checks (a run found it unreachable) shows at once, and so
/// does a run that marked the node unhealthy while others are up: the set
/// is asked again at once. Each call has its client's deadline.
pub async fn watch_sidecars(
    set: crate::sidecar::set::SidecarSet,
    admission: Admission,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut up = set.watch_up();
    let mut healthy = admission.inner.healthy.subscribe();
    loop {
        let any = set.check().await;
        admission.set_healthy(any);
        if let Some(models) = set.lane1_models() {
            admission.set_served(models);
        }
        let all_up = set.members().iter().all(crate::sidecar::set::Member::is_up);
        let pause = if all_up {
            every
        } else {
            every.min(Duration::from_secs(1))
        };
        up.borrow_and_update();
        healthy.borrow_and_update();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            Ok(()) = up.changed() => {}
            Ok(()) = healthy.changed() => {}
        }
    }
}
