//! One signer per key: the nonces this process signed, checked against the
//! account's nonce in finalized blocks.
//!
//! Two processes signing with one key (a fail-over pair both up, a copied
//! key) would both send every call — each a second `start_task`, a second
//! `fail_task` — and race each other's nonces. The state file's lock keeps
//! two nodes off one state directory; this catches the rest from the chain
//! itself: every nonce from the first this process signed up to the
//! account's nonce in a finalized block must be one it signed. One that is
//! not was signed elsewhere, and the node stops signing (its calls are
//! refused with [`SubmitError::ForeignSigner`](crate::chain::SubmitError)),
//! reports not ready and sets `lane1_foreign_signer` (alert
//! `Lane1ForeignSigner`) until it is restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The nonces this process signed; clones share one record.
#[derive(Clone, Debug, Default)]
pub struct OwnNonces {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    signed: BTreeSet<u64>,
    first: Option<u64>,
    /// Nonces below this are checked.
    checked_to: u64,
    /// The account's nonce at the last finalized block seen: checked at
    /// the next one.
    previous: Option<u64>,
    /// Nonces used on chain and not (yet) seen signed here, with when
    /// they were first missed: a call's record is made just after the pool
    /// took it, and a busy chain can finalize it first.
    missing: BTreeMap<u64, Instant>,
    /// A nonce another process used.
    foreign: Option<u64>,
}

/// How long a nonce used on chain may be missing from the record before
/// it is taken for another signer's.
pub const SIGNER_GRACE: Duration = Duration::from_secs(5);

impl OwnNonces {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each critical section is one small update: never half-done.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This process signed a transaction with `nonce`.
    pub fn signed(&self, nonce: u64) {
        let mut inner = self.lock();
        inner.first = Some(inner.first.map_or(nonce, |f| f.min(nonce)));
        inner.signed.insert(nonce);
        inner.missing.remove(&nonce);
    }

    /// The nonce another process was seen to use, if any.
    pub fn foreign(&self) -> Option<u64> {
        self.lock().foreign
    }

    /// The account's nonce at a finalized block (how many of its
    /// transactions the chain holds up to there). Returns a nonce this
    /// process did not sign and that has been used on chain for
    /// [`SIGNER_GRACE`], the first time one is found.
    pub fn finalized(&self, nonce: u64) -> Option<u64> {
        let mut inner = self.lock();
        let now = Instant::now();
        if let (Some(upto), Some(first)) = (inner.previous.replace(nonce), inner.first) {
            let from = inner.checked_to.max(first);
            for k in from..upto {
                if !inner.signed.contains(&k) {
                    inner.missing.entry(k).or_insert(now);
                }
            }
            inner.checked_to = inner.checked_to.max(upto);
            let checked_to = inner.checked_to;
            while inner.signed.first().is_some_and(|k| *k < checked_to) {
                inner.signed.pop_first();
            }
        }
        if inner.foreign.is_some() {
            return None;
        }
        let overdue = inner
            .missing
            .iter()
            .find(|(_, since)| now.duration_since(**since) >= SIGNER_GRACE)
            .map(|(k, _)| *k)?;
        inner.foreign = Some(overdue);
        Some(overdue)
    }
}

/// The nonce records of the nodes in one process, by account: for a part
/// of a node that signs beside its executor with the same key (its Lane 0
/// side), so that its calls are not taken for another signer's.
#[derive(Clone, Debug, Default)]
pub struct Signers {
    nodes: Arc<Mutex<std::collections::HashMap<crate::task::AccountId, OwnNonces>>>,
}

impl Signers {
    /// `account`'s node keeps its nonces in `nonces` (from now on).
    pub fn set(&self, account: crate::task::AccountId, nonces: OwnNonces) {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(account, nonces);
    }

    /// The nonce record of `account`'s node, if it has one.
    pub fn get(&self, account: crate::task::AccountId) -> Option<OwnNonces> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&account)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_nonce_not_signed_here_is_foreign_after_the_grace() {
        let own = OwnNonces::default();
        assert_eq!(own.finalized(3), None, "nothing signed yet");
        own.signed(3);
        own.signed(4);
        assert_eq!(own.finalized(5), None);
        // Another process used 5; ours is 6.
        own.signed(6);
        assert_eq!(own.finalized(7), None);
        assert_eq!(own.finalized(7), None, "5 is missing, but within the grace");
        tokio::time::advance(SIGNER_GRACE).await;
        assert_eq!(own.finalized(7), Some(5));
        assert_eq!(own.foreign(), Some(5));
        assert_eq!(own.finalized(9), None, "told once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_nonce_recorded_late_is_not_foreign() {
        let own = OwnNonces::default();
        own.signed(1);
        assert_eq!(own.finalized(3), None);
        assert_eq!(own.finalized(3), None, "2 missing for now");
        // Its record comes after a block finalized it.
        own.signed(2);
        tokio::time::advance(SIGNER_GRACE * 2).await;
        assert_eq!(own.finalized(3), None);
        assert_eq!(own.foreign(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_runs_nonces_are_not_foreign() {
        let own = OwnNonces::default();
        assert_eq!(own.finalized(10), None);
        own.signed(12);
        assert_eq!(own.finalized(13), None);
        assert_eq!(own.finalized(13), None);
        tokio::time::advance(SIGNER_GRACE).await;
        assert_eq!(
            own.finalized(13),
            None,
            "10 and 11 came before the first we signed"
        );
        assert_eq!(own.foreign(), None);
    }
}
