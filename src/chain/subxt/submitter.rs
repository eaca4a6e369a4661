//! The pipelined submitter: one owner of an account's nonce, many
//! transactions in flight.
//!
//! Each call is signed with the next nonce and a mortal era, handed to the
//! pool with `author_submitExtrinsic` (in nonce order: the nonce lock is held
//! until the pool answers), and then watched *without* a per-transaction
//! subscription: one tracker task per submitter reads each new finalized
//! block once, finds the extrinsics it waits for by hash and hands each
//! caller its block, index, events or dispatch error. A transaction that
//! leaves the pool without being included (its era ran out, the pool evicted
//! it, or another transaction took its nonce) is noticed by the tracker; the
//! call then either re-signs it with the same nonce (the nonce is still
//! free, so later transactions are not stuck behind a gap) or, if the nonce
//! was used by someone else, resyncs the nonce and reports the call stale.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use subxt::PolkadotConfig;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{MORTALITY, SubxtChain, call_fields, pool_rejection};
use crate::chain::{
    BlockRef, ChainPort, DispatchError, Inclusion, InvalidTransaction, MarketCall, MarketEvent,
    PALLET, SubmitError,
};
use crate::layer::retry::backoff::Backoff;
use crate::task::AccountId;

/// An extrinsic hash.
pub(super) type TxHash = [u8; 32];

/// A watched extrinsic found in a finalized block.
#[derive(Debug)]
pub(super) struct Found {
    pub block: BlockRef,
    pub index: u32,
    /// Its task-market events, or why its dispatch failed.
    pub result: Result<Vec<MarketEvent>, DispatchError>,
}

/// What became of a watched transaction.
#[derive(Debug)]
enum Fate {
    Included(Found),
    /// In no block up to the tracker's head and no longer in the pool.
    Gone,
}

struct Waiter {
    /// The finalized head before it was submitted: it can only be in a
    /// later block.
    after: u32,
    /// The first block in which its era no longer lets it in.
    dies_at: u32,
    bytes: Arc<[u8]>,
    since: Instant,
    done: oneshot::Sender<Fate>,
}

/// How often the pool is asked about transactions that have waited a while
/// without a new block (a pool that dropped one builds no block for it).
const POOL_CHECK: Duration = Duration::from_secs(5);

/// How often a call re-signs a transaction that left the pool with its
/// nonce still free before giving up with [`SubmitError::Dropped`].
const RESUBMITS: u32 = 3;

#[derive(Default)]
struct Tracker {
    pending: StdMutex<HashMap<TxHash, Waiter>>,
    added: Notify,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TxHash, Waiter>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (each operation is a single insert/remove), so poisoning is ignored.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn watch(&self, hash: TxHash, waiter: Waiter) {
        self.lock().insert(hash, waiter);
        self.added.notify_one();
    }

    fn forget(&self, hash: &TxHash) {
        self.lock().remove(hash);
    }

    fn resolve(&self, hash: &TxHash, fate: Fate) {
        if let Some(w) = self.lock().remove(hash) {
            // The caller may have gone away (cancelled); nothing to tell then.
            let _ = w.done.send(fate);
        }
    }

    fn first_after(&self) -> Option<u32> {
        self.lock().values().map(|w| w.after).min()
    }

    fn hashes(&self) -> HashSet<TxHash> {
        self.lock().keys().copied().collect()
    }

    /// Resolves as gone every waiter whose era ended by block `n`.
    fn expire(&self, n: u32) {
        let dead: Vec<TxHash> = self
            .lock()
            .iter()
            .filter(|(_, w)| w.dies_at <= n)
            .map(|(h, _)| *h)
            .collect();
        for h in dead {
            self.resolve(&h, Fate::Gone);
        }
    }

    /// Waiters older than [`POOL_CHECK`], with their bytes.
    fn stale(&self) -> Vec<(TxHash, Arc<[u8]>)> {
        self.lock()
            .iter()
            .filter(|(_, w)| w.since.elapsed() >= POOL_CHECK)
            .map(|(h, w)| (*h, w.bytes.clone()))
            .collect()
    }

    /// Reads finalized blocks as long as someone waits, resolving waiters.
    async fn run(self: Arc<Self>, chain: SubxtChain, stop: CancellationToken) {
        let mut next: Option<u32> = None;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut heads: Option<subxt::client::Blocks<PolkadotConfig>> = None;
        loop {
            if self.lock().is_empty() {
                next = None;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.added.notified() => continue,
                }
            }
            let step = async {
                let head = chain.finalized_head().await?.number;
                let mut n = match (next, self.first_after()) {
                    (Some(n), _) => n,
                    (None, Some(after)) => after + 1,
                    (None, None) => return Ok(head),
                };
                while n <= head && !self.lock().is_empty() {
                    let wanted = self.hashes();
                    for (hash, found) in chain.inclusions(n, &wanted).await? {
                        self.resolve(&hash, Fate::Included(found));
                    }
                    self.expire(n);
                    n += 1;
                    next = Some(n);
                }
                Ok::<u32, crate::chain::ChainError>(head)
            };
            let head = tokio::select! {
                () = stop.cancelled() => return,
                r = step => r,
            };
            let head = match head {
                Ok(h) => {
                    backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
                    h
                }
                Err(e) => {
                    tracing::warn!(error = %e, "submission tracker cannot read the chain; retrying");
                    heads = None;
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => continue,
                    }
                }
            };
            if self.lock().is_empty() {
                continue;
            }
            // Wait for the next finalized head, asking the pool about
            // long-waiting transactions when none comes.
            if heads.is_none() {
                match chain.api.stream_blocks().await {
                    Ok(s) => heads = Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow finalized heads; retrying");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(backoff.next_delay()) => continue,
                        }
                    }
                }
            }
            let Some(stream) = heads.as_mut() else {
                continue;
            };
            tokio::select! {
                () = stop.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "finalized head subscription failed; resubscribing");
                        heads = None;
                    }
                    None => heads = None,
                },
                () = tokio::time::sleep(POOL_CHECK) => {
                    if let Err(e) = self.check_pool(&chain, head).await {
                        tracing::warn!(error = %e, "cannot read the transaction pool");
                    }
                }
            }
        }
    }

    /// Marks gone the long-waiting transactions that are in no block up to
    /// `scanned` and no longer in the pool. Only decides when the chain has
    /// not moved since `scanned` (otherwise a transaction that just left the
    /// pool for a new block would be taken for lost).
    async fn check_pool(&self, chain: &SubxtChain, scanned: u32) -> Result<(), String> {
        let stale = self.stale();
        if stale.is_empty() {
            return Ok(());
        }
        let pool: Vec<subxt::rpcs::methods::legacy::Bytes> = chain
            .rpc
            .request("author_pendingExtrinsics", subxt::rpcs::rpc_params![])
            .await
            .map_err(|e| e.to_string())?;
        let head = chain.finalized_head().await.map_err(|e| e.to_string())?;
        if head.number != scanned {
            return Ok(());
        }
        let in_pool: HashSet<&[u8]> = pool.iter().map(|b| &b.0[..]).collect();
        for (hash, bytes) in stale {
            if !in_pool.contains(&bytes[..]) {
                tracing::warn!(tx = %hex(&hash), "transaction left the pool without being included");
                self.resolve(&hash, Fate::Gone);
            }
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::from("0x"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Submits task-market calls as one account: a `tower::Service<MarketCall>`
/// like the dev chain's, and the one owner of the account's nonce. See the
/// module documentation for how transactions are pipelined and watched.
#[derive(Clone)]
pub struct SubxtSubmitter {
    inner: Arc<Inner>,
}

struct Inner {
    chain: SubxtChain,
    account: AccountId,
    signer: subxt_signer::sr25519::Keypair,
    nonce: Arc<tokio::sync::Mutex<Option<u64>>>,
    tracker: Arc<Tracker>,
    started: std::sync::OnceLock<()>,
    stop: CancellationToken,
    _guard: DropGuard,
}

impl std::fmt::Debug for SubxtSubmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SubxtSubmitter")
            .field("account", &self.inner.account)
            .finish()
    }
}

/// A signed transaction ready for the pool.
struct Signed {
    hash: TxHash,
    bytes: Arc<[u8]>,
    after: u32,
    dies_at: u32,
}

impl SubxtSubmitter {
    pub(super) fn new(chain: SubxtChain, signer: subxt_signer::sr25519::Keypair) -> Self {
        let stop = CancellationToken::new();
        SubxtSubmitter {
            inner: Arc::new(Inner {
                chain,
                account: AccountId(signer.public_key().0),
                signer,
                nonce: Default::default(),
                tracker: Default::default(),
                started: std::sync::OnceLock::new(),
                _guard: stop.clone().drop_guard(),
                stop,
            }),
        }
    }

    /// The account it signs for.
    pub fn account(&self) -> AccountId {
        self.inner.account
    }

    /// Transactions handed to the pool and not yet seen final.
    pub fn in_flight(&self) -> usize {
        self.inner.tracker.lock().len()
    }

    fn start_tracker(&self) {
        self.inner.started.get_or_init(|| {
            let tracker = self.inner.tracker.clone();
            let chain = self.inner.chain.clone();
            let stop = self.inner.stop.clone();
            tokio::spawn(tracker.run(chain, stop));
        });
    }
}

impl Inner {
    async fn sign(&self, call: &MarketCall, nonce: u64) -> Result<Signed, SubmitError> {
        let connection = |e: &dyn std::fmt::Display| SubmitError::Connection(e.to_string());
        let at = self
            .chain
            .api
            .at_current_block()
            .await
            .map_err(|e| connection(&e))?;
        let after = u32::try_from(at.block_number()).map_err(|e| connection(&e))?;
        let payload = subxt::dynamic::tx(PALLET, call.name(), call_fields(call));
        let params = subxt::config::PolkadotExtrinsicParamsBuilder::<PolkadotConfig>::new()
            .nonce(nonce)
            .mortal(MORTALITY)
            .build();
        let tx = at
            .tx()
            .create_signed(&payload, &self.signer, params)
            .await
            .map_err(|e| connection(&e))?;
        Ok(Signed {
            hash: tx.hash().0,
            bytes: tx.encoded().into(),
            after,
            dies_at: after.saturating_add(u32::try_from(MORTALITY).unwrap_or(u32::MAX)),
        })
    }

    /// Registers `signed` with the tracker and hands it to the pool.
    async fn send(
        &self,
        call: &MarketCall,
        nonce: u64,
        signed: &Signed,
    ) -> Result<oneshot::Receiver<Fate>, SubmitError> {
        let (done, fate) = oneshot::channel();
        // Watched before it is sent, so that no block can hold it unseen.
        self.tracker.watch(
            signed.hash,
            Waiter {
                after: signed.after,
                dies_at: signed.dies_at,
                bytes: signed.bytes.clone(),
                since: Instant::now(),
                done,
            },
        );
        let methods = subxt::rpcs::methods::LegacyRpcMethods::<
            subxt::config::RpcConfigFor<PolkadotConfig>,
        >::new(self.chain.rpc.clone());
        if let Err(e) = methods.author_submit_extrinsic(&signed.bytes).await {
            self.tracker.forget(&signed.hash);
            return Err(pool_rejection(call.name(), Some(nonce), &e.to_string()));
        }
        Ok(fate)
    }

    async fn submit(&self, call: MarketCall) -> Result<Inclusion, SubmitError> {
        let name = call.name();
        // Transactions reach the pool in nonce order: the lock is held until
        // the pool has answered for this one.
        let mut next = self.nonce.lock().await;
        let nonce = match *next {
            Some(n) => n,
            None => self
                .chain
                .account_nonce(self.account)
                .await
                .map_err(|e| SubmitError::Connection(e.to_string()))?,
        };
        let sent = async {
            let signed = self.sign(&call, nonce).await?;
            let fate = self.send(&call, nonce, &signed).await?;
            Ok::<_, SubmitError>((signed, fate))
        }
        .await;
        let mut fate = match sent {
            Ok(s) => {
                *next = Some(nonce + 1);
                drop(next);
                s.1
            }
            Err(e) => {
                // Start again from the chain's view of the next nonce.
                *next = None;
                return Err(e);
            }
        };
        let mut resubmits = 0;
        loop {
            let outcome = fate.await.map_err(|_| SubmitError::Closed)?;
            match outcome {
                Fate::Included(found) => {
                    return match found.result {
                        Ok(events) => Ok(Inclusion {
                            block: found.block,
                            index: found.index,
                            nonce,
                            events,
                        }),
                        Err(error) => Err(SubmitError::Dispatch {
                            call: name,
                            error,
                            block: found.block,
                        }),
                    };
                }
                Fate::Gone => {
                    let chain_next = self
                        .chain
                        .account_nonce(self.account)
                        .await
                        .map_err(|e| SubmitError::Connection(e.to_string()))?;
                    if chain_next > nonce {
                        // Someone else's transaction took this nonce.
                        *self.nonce.lock().await = None;
                        return Err(SubmitError::Invalid {
                            call: name,
                            reason: InvalidTransaction::Stale {
                                nonce,
                                expected: chain_next,
                            },
                        });
                    }
                    if resubmits == RESUBMITS {
                        *self.nonce.lock().await = None;
                        return Err(SubmitError::Dropped { call: name });
                    }
                    resubmits += 1;
                    tracing::warn!(
                        call = name,
                        nonce,
                        attempt = resubmits,
                        "re-signing a transaction that left the pool"
                    );
                    let resent = async {
                        let signed = self.sign(&call, nonce).await?;
                        self.send(&call, nonce, &signed).await
                    }
                    .await;
                    fate = match resent {
                        Ok(f) => f,
                        Err(e) => {
                            // The nonce may now be taken or still free: ask
                            // the chain again before the next call.
                            *self.nonce.lock().await = None;
                            return Err(e);
                        }
                    };
                }
            }
        }
    }
}

impl tower::Service<MarketCall> for SubxtSubmitter {
    type Response = Inclusion;
    type Error = SubmitError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Inclusion, SubmitError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            this.start_tracker();
            this.inner.submit(call).await
        })
    }
}

impl SubxtChain {
    /// A submitter that signs as `signer`.
    pub fn submitter(&self, signer: subxt_signer::sr25519::Keypair) -> SubxtSubmitter {
        SubxtSubmitter::new(self.clone(), signer)
    }

    /// Signs and submits one call as `signer` and waits until it is final;
    /// returns its block. For one-off calls: a [`SubxtSubmitter`] owns the
    /// nonce across many.
    pub async fn submit_signed(
        &self,
        signer: &subxt_signer::sr25519::Keypair,
        call: &MarketCall,
    ) -> Result<crate::chain::BlockHash, SubmitError> {
        use tower::ServiceExt;
        let inclusion = self.submitter(signer.clone()).oneshot(call.clone()).await?;
        Ok(inclusion.block.hash)
    }
}
