// Over ~600 lines: nonce ownership, the outbox and the inclusion tracker
// share one record of each transaction's fate; splitting them (outbox and
// tracker into files of their own) is planned work.
//! The pipelined submitter: one owner of an account's nonce, many
//! transactions in flight.
//!
//! Each call is signed offline with the next nonce and a mortal era, then
//! queued — under the nonce lock, so in nonce order — to an *outbox*: a
//! connection of its own that sends each request without waiting for the
//! answer to the one before (`author_submitExtrinsic`). The call answers
//! with the pool's verdict (a refusal resyncs the nonce from the chain): a
//! [`Pooled`] transaction, which resolves once it is in a best block. That
//! is watched *without* a per-transaction subscription: one tracker task per
//! submitter reads each new best block once, finds the extrinsics it waits
//! for by hash and hands each caller its block, index, events or dispatch
//! error. What happens after the pool's verdict runs as a task of its own,
//! so a caller that stops waiting never leaves a dropped transaction
//! un-resent.
//!
//! The submitter's readiness is its backpressure: at most
//! [`MAX_OUTSTANDING`] transactions are between the pool and a block at
//! once; `poll_ready` waits for a free place.
//!
//! A transaction can leave a pool without being included. The tracker asks
//! the pool about transactions that wait long, and sends one it is sure was
//! dropped again, byte for byte (same hash: never a second transaction for
//! one call). When a transaction's era has run out, it can no longer be
//! included: the call then re-signs it with the same nonce if the nonce is
//! still free (so later transactions are not stuck behind a gap) or, if
//! another transaction used the nonce, resyncs and reports the call stale.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use subxt::PolkadotConfig;
use subxt::dynamic::Value;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{MORTALITY, SubxtChain, call_fields, pool_rejection};
use crate::chain::{
    BlockRef, ChainPort, ConnectionError, DispatchError, Inclusion, InvalidTransaction, MarketCall,
    MarketEvent, PALLET, Pooled, SubmitError,
};
use crate::layer::retry::backoff;
use crate::task::AccountId;
use tower::retry::backoff::Backoff as _;

/// An extrinsic hash.
pub(super) type TxHash = [u8; 32];

/// Most transactions a submitter has between the pool and a block at once.
pub const MAX_OUTSTANDING: usize = 256;

/// A watched extrinsic found in a best block.
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
    /// When the pool was first seen without it, and the best block then.
    absent: Option<(Instant, u32)>,
    nonce: u64,
    done: oneshot::Sender<Fate>,
}

/// How often the pool is asked about transactions that have waited a while
/// without a new block (a pool that dropped one builds no block for it).
const POOL_CHECK: Duration = Duration::from_secs(1);

/// How long a transaction must have been missing from the pool (with a
/// block built meanwhile) before it is taken for dropped and sent again.
const DROPPED_AFTER: Duration = Duration::from_secs(2);

/// How long a chain that builds no block is taken to be idle rather than
/// building one (far longer than any block takes to build).
const IDLE_AFTER: Duration = Duration::from_secs(6);

/// How long a block read for signing serves as the era's birth block.
/// Well under the era ([`MORTALITY`] blocks), so every transaction has
/// nearly its whole era to get in.
const BIRTH_REFRESH: Duration = Duration::from_secs(2);

/// How far finality may trail the best block before transactions are
/// born on the best chain instead of at the finalized block.
const BIRTH_STALL_LAG: u32 = 16;

/// How far below the best block a transaction is born while finality
/// stalls.
const BIRTH_DEPTH: u32 = 4;

type AtBlock = subxt::client::OnlineClientAtBlock<PolkadotConfig>;

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

    /// Resolves as gone every waiter whose era ended by block `n`: no block
    /// after it can include it, so its fate is certain.
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

    /// Waiters last checked [`POOL_CHECK`] or longer ago, with their bytes.
    fn stale(&self) -> Vec<(TxHash, Arc<[u8]>)> {
        self.lock()
            .iter()
            .filter(|(_, w)| w.since.elapsed() >= POOL_CHECK)
            .map(|(h, w)| (*h, w.bytes.clone()))
            .collect()
    }

    /// Reads best blocks as long as someone waits, resolving waiters.
    async fn run(
        self: Arc<Self>,
        chain: SubxtChain,
        outbox: OutboxSender,
        stop: CancellationToken,
    ) {
        let mut next: Option<u32> = None;
        // The blocks read lately, by number: after a re-org the tracker
        // reads the new branch's blocks from where it differs, so an
        // inclusion there is not missed.
        let mut read: std::collections::BTreeMap<u32, crate::chain::BlockHash> =
            std::collections::BTreeMap::new();
        let mut retry_delay = backoff(Duration::from_millis(100), Duration::from_secs(5));
        let mut heads: Option<subxt::client::Blocks<PolkadotConfig>> = None;
        let mut last_check = Instant::now();
        loop {
            if self.lock().is_empty() {
                next = None;
                read.clear();
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.added.notified() => continue,
                }
            }
            let step = async {
                let head = chain.best_number().await?;
                let mut n = match (next, self.first_after()) {
                    (Some(n), _) => n,
                    (None, Some(after)) => after + 1,
                    (None, None) => return Ok(()),
                };
                n = chain.rewind(&mut read, n).await?;
                while n <= head && !self.lock().is_empty() {
                    let wanted = self.hashes();
                    let (hash_read, found) = chain.inclusions(n, &wanted).await?;
                    read.insert(n, hash_read);
                    while read.len() > 32 {
                        read.pop_first();
                    }
                    for (hash, found) in found {
                        self.resolve(&hash, Fate::Included(found));
                    }
                    self.expire(n);
                    n += 1;
                    next = Some(n);
                }
                Ok::<(), crate::chain::ChainError>(())
            };
            let stepped = tokio::select! {
                () = stop.cancelled() => return,
                r = step => r,
            };
            match stepped {
                Ok(()) => retry_delay = backoff(Duration::from_millis(100), Duration::from_secs(5)),
                Err(e) => {
                    tracing::warn!(error = %e, "submission tracker cannot read the chain; retrying");
                    heads = None;
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = retry_delay.next_backoff() => continue,
                    }
                }
            }
            if self.lock().is_empty() {
                continue;
            }
            // Wait for the next best head, asking the pool about
            // long-waiting transactions when none comes.
            if heads.is_none() {
                match chain.api.stream_best_blocks().await {
                    Ok(s) => heads = Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow best heads; retrying");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = retry_delay.next_backoff() => continue,
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
                        tracing::warn!(error = %e, "best head subscription failed; resubscribing");
                        heads = None;
                    }
                    None => heads = None,
                },
                () = tokio::time::sleep(POOL_CHECK) => {}
            }
            if last_check.elapsed() >= POOL_CHECK {
                last_check = Instant::now();
                let scanned = next.map(|n| n.saturating_sub(1));
                if let Err(e) = self.check_pool(&chain, &outbox, scanned).await {
                    tracing::warn!(error = %e, "cannot read the transaction pool");
                }
            }
        }
    }

    /// Asks the pool about long-waiting transactions and sends again,
    /// byte for byte, each one that has been dropped. A transaction is taken
    /// for dropped only when it has been missing from the pool for
    /// [`DROPPED_AFTER`], no finalized block up to the best block of now
    /// holds it (`scanned` is the last block read), and a block has been
    /// built since it was first missed — so it cannot be in a block being
    /// built either (or none has come for [`IDLE_AFTER`]). (Sending a copy of a transaction that is in fact being
    /// included would leave the copy in some pools for good.) The same bytes
    /// have the same hash, so there is never a second transaction to confuse
    /// with the first. Chopsticks, for one, drops a transaction it cannot
    /// apply yet, such as a nonce that arrived before its predecessor.
    async fn check_pool(
        &self,
        chain: &SubxtChain,
        outbox: &OutboxSender,
        scanned: Option<u32>,
    ) -> Result<(), String> {
        let stale = self.stale();
        if stale.is_empty() {
            return Ok(());
        }
        let pool: Vec<subxt::rpcs::methods::legacy::Bytes> = chain
            .rpc
            .request("author_pendingExtrinsics", subxt::rpcs::rpc_params![])
            .await
            .map_err(|e| e.to_string())?;
        let best = chain.best_number().await.map_err(|e| e.to_string())?;
        let in_pool: HashSet<&[u8]> = pool.iter().map(|b| &b.0[..]).collect();
        let mut dropped = Vec::new();
        {
            let mut pending = self.lock();
            for (hash, bytes) in stale {
                let Some(w) = pending.get_mut(&hash) else {
                    continue;
                };
                w.since = Instant::now();
                if in_pool.contains(&bytes[..]) {
                    w.absent = None;
                    continue;
                }
                let Some((first, best_then)) = w.absent else {
                    w.absent = Some((Instant::now(), best));
                    continue;
                };
                // No block in `IDLE_AFTER`: no block is being built either.
                let built_since = best > best_then || first.elapsed() >= IDLE_AFTER;
                if first.elapsed() >= DROPPED_AFTER
                    && built_since
                    && scanned.is_some_and(|s| s >= best)
                {
                    w.absent = None;
                    dropped.push((w.nonce, hash, bytes));
                }
            }
        }
        if dropped.is_empty() {
            return Ok(());
        }
        // Sent again one at a time in nonce order, each after the pool has
        // answered for the one before, so that they cannot overtake each
        // other on the way in.
        dropped.sort_by_key(|(nonce, _, _)| *nonce);
        let outbox = outbox.clone();
        tokio::spawn(async move {
            for (nonce, hash, bytes) in dropped {
                tracing::debug!(tx = %hex(&hash), nonce, "transaction dropped from the pool; sending it again");
                let (verdict, answer) = oneshot::channel();
                if outbox.send((bytes, verdict)).is_err() {
                    return;
                }
                if let Ok(Err(e)) = answer.await {
                    tracing::debug!(nonce, error = %e, "the pool refused the copy");
                }
            }
        });
        Ok(())
    }
}

type OutboxSender = tokio::sync::mpsc::UnboundedSender<(Arc<[u8]>, Verdict)>;

/// Verdicts of the pool, one per transaction sent.
type Verdict = oneshot::Sender<Result<(), subxt::rpcs::Error>>;

/// Hands signed transactions to the pool over a connection of its own,
/// without waiting for one answer before sending the next, yet in the order
/// they were queued (nonce order): each request is created and first polled
/// in queue order, and a connection writes requests in the order they are
/// first polled. (The chain client's reconnecting connection dispatches
/// each request on a task of its own, which does not keep that order.) A
/// pool that validates transactions as they arrive and builds blocks in
/// arrival order, as chopsticks does, then never sees a nonce gap.
async fn outbox(
    url: Arc<str>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<(Arc<[u8]>, Verdict)>,
) {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;
    type Methods =
        subxt::rpcs::methods::LegacyRpcMethods<subxt::config::RpcConfigFor<PolkadotConfig>>;
    let mut client: Option<subxt::rpcs::RpcClient> = None;
    let mut in_flight = FuturesUnordered::new();
    let mut retry_delay = backoff(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            biased;
            item = queue.recv() => {
                let Some((bytes, verdict)) = item else { break };
                if client.is_none() {
                    match subxt::rpcs::RpcClient::from_insecure_url(&*url).await {
                        Ok(c) => {
                            retry_delay = backoff(Duration::from_millis(100), Duration::from_secs(5));
                            client = Some(c);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot open the submission connection");
                            let _ = verdict.send(Err(e));
                            retry_delay.next_backoff().await;
                            continue;
                        }
                    }
                }
                if let Some(c) = &client {
                    let methods = Methods::new(c.clone());
                    in_flight.push(async move {
                        let answer = tokio::time::timeout(
                            SUBMIT_ANSWER_WAIT,
                            methods.author_submit_extrinsic(&bytes),
                        )
                        .await;
                        let result = match answer {
                            Ok(result) => result.map(|_| ()),
                            Err(_) => Err(subxt::rpcs::Error::Client(
                                format!("no answer from the pool in {SUBMIT_ANSWER_WAIT:?}").into(),
                            )),
                        };
                        (result, verdict)
                    });
                }
            }
            Some((result, verdict)) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = &result
                    && !matches!(e, subxt::rpcs::Error::User(_))
                {
                    // The connection failed: open a new one for the next send.
                    client = None;
                }
                let _ = verdict.send(result);
            }
        }
    }
    // Answer what is still in flight before the connection goes.
    while let Some((result, verdict)) = in_flight.next().await {
        let _ = verdict.send(result);
    }
}

/// How long the outbox waits for the pool's answer to one transaction.
const SUBMIT_ANSWER_WAIT: Duration = Duration::from_secs(30);

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
pub struct SubxtSubmitter {
    inner: Arc<Inner>,
    /// Places for transactions between the pool and a block.
    places: tokio_util::sync::PollSemaphore,
    /// The place `poll_ready` reserved for the next call.
    place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Clone for SubxtSubmitter {
    /// A clone shares the places, but not one reserved by `poll_ready`.
    fn clone(&self) -> Self {
        SubxtSubmitter {
            inner: self.inner.clone(),
            places: self.places.clone(),
            place: None,
        }
    }
}

struct Inner {
    chain: SubxtChain,
    account: AccountId,
    signer: subxt_signer::sr25519::Keypair,
    /// Wraps every call in `Sudo::sudo` (the signer must be the sudo key).
    root: bool,
    nonce: Arc<tokio::sync::Mutex<Option<u64>>>,
    tracker: Arc<Tracker>,
    birth: tokio::sync::Mutex<Option<(Instant, AtBlock)>>,
    outbox: std::sync::OnceLock<OutboxSender>,
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

/// The pool's answer to one send.
struct PoolAnswer {
    hash: TxHash,
    answer: oneshot::Receiver<Result<(), subxt::rpcs::Error>>,
}

/// A signed transaction ready for the pool.
struct Signed {
    nonce: u64,
    hash: TxHash,
    bytes: Arc<[u8]>,
    after: u32,
    dies_at: u32,
}

impl SubxtSubmitter {
    pub(super) fn new(
        chain: SubxtChain,
        signer: subxt_signer::sr25519::Keypair,
        root: bool,
    ) -> Self {
        let stop = CancellationToken::new();
        SubxtSubmitter {
            places: tokio_util::sync::PollSemaphore::new(Arc::new(tokio::sync::Semaphore::new(
                MAX_OUTSTANDING,
            ))),
            place: None,
            inner: Arc::new(Inner {
                chain,
                account: AccountId(signer.public_key().0),
                signer,
                root,
                nonce: Default::default(),
                tracker: Default::default(),
                birth: tokio::sync::Mutex::new(None),
                outbox: std::sync::OnceLock::new(),
                _guard: stop.clone().drop_guard(),
                stop,
            }),
        }
    }

    /// The account it signs for.
    pub fn account(&self) -> AccountId {
        self.inner.account
    }

    /// Transactions handed to the pool and not yet seen in a block.
    pub fn in_flight(&self) -> usize {
        self.inner.tracker.lock().len()
    }

    /// Places left for transactions between the pool and a block.
    pub fn free_places(&self) -> usize {
        self.places.available_permits()
    }
}

impl Inner {
    /// The outbox, started with the tracker on first use (both run on the
    /// caller's runtime until the last clone of the submitter is dropped).
    fn outbox(&self) -> &OutboxSender {
        self.outbox.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(outbox(self.chain.url.clone(), rx));
            tokio::spawn(self.tracker.clone().run(
                self.chain.clone(),
                tx.clone(),
                self.stop.clone(),
            ));
            tx
        })
    }

    /// The block transactions are signed against (their era's birth): the
    /// finalized block, or a block of the best chain while finality trails
    /// it by more than [`BIRTH_STALL_LAG`]; re-read when older than
    /// [`BIRTH_REFRESH`]: reading it costs several round trips, too many to
    /// pay for every transaction.
    async fn birth(&self) -> Result<AtBlock, SubmitError> {
        let mut cached = self.birth.lock().await;
        if let Some((read, at)) = cached.as_ref()
            && read.elapsed() < BIRTH_REFRESH
        {
            return Ok(at.clone());
        }
        let connection =
            |e: &dyn std::fmt::Display| SubmitError::Connection(ConnectionError::transport(e));
        let finalized = self
            .chain
            .api
            .at_current_block()
            .await
            .map_err(|e| connection(&e))?;
        // While finality stalls, an era born at the finalized block runs
        // out with nothing wrong: the birth follows the best chain instead,
        // a few blocks back from its head (deeper than a usual re-org), so
        // that a stall shows as head lag, never as calls that cannot go.
        let at = match self.chain.best_head().await {
            Ok(best)
                if u64::from(best.number)
                    > finalized.block_number() + u64::from(BIRTH_STALL_LAG) =>
            {
                let birth = best.number.saturating_sub(BIRTH_DEPTH);
                match self.chain.api.at_block(birth).await {
                    Ok(at) => at,
                    Err(error) => {
                        tracing::debug!(%error, birth, "cannot read the best chain's block; signing against the finalized one");
                        finalized
                    }
                }
            }
            _ => finalized,
        };
        *cached = Some((Instant::now(), at.clone()));
        Ok(at)
    }

    async fn sign(&self, call: &MarketCall, nonce: u64) -> Result<Signed, SubmitError> {
        let connection =
            |e: &dyn std::fmt::Display| SubmitError::Connection(ConnectionError::transport(e));
        let at = self.birth().await?;
        let after = u32::try_from(at.block_number()).map_err(|e| connection(&e))?;
        let payload = if self.root {
            // `Sudo::sudo(call)`: the inner call as a value of the runtime's
            // call enum (pallet variant, then call variant).
            let inner = Value::unnamed_variant(
                PALLET,
                [Value::unnamed_variant(call.name(), call_fields(call))],
            );
            subxt::dynamic::tx("Sudo", "sudo", vec![inner])
        } else {
            subxt::dynamic::tx(PALLET, call.name(), call_fields(call))
        };
        let params = subxt::config::PolkadotExtrinsicParamsBuilder::<PolkadotConfig>::new()
            .nonce(nonce)
            .mortal_from_unchecked(MORTALITY, at.block_number(), at.block_hash())
            .build();
        // Offline: the nonce and the birth block are known, so signing
        // needs no round trip.
        let tx = at
            .tx()
            .create_signable_offline(&payload, params)
            .and_then(|mut signable| signable.sign(&self.signer))
            .map_err(|e| connection(&e))?;
        Ok(Signed {
            nonce,
            hash: tx.hash().0,
            bytes: tx.encoded().into(),
            after,
            dies_at: after.saturating_add(u32::try_from(MORTALITY).unwrap_or(u32::MAX)),
        })
    }

    /// Registers `signed` with the tracker and queues it for the pool (in
    /// call order: called under the nonce lock); the receiver answers with
    /// the pool's verdict.
    fn send(&self, signed: &Signed) -> (oneshot::Receiver<Fate>, PoolAnswer) {
        let (done, fate) = oneshot::channel();
        // Watched before it is sent, so that no block can hold it unseen.
        self.tracker.watch(
            signed.hash,
            Waiter {
                after: signed.after,
                dies_at: signed.dies_at,
                bytes: signed.bytes.clone(),
                since: Instant::now(),
                absent: None,
                nonce: signed.nonce,
                done,
            },
        );
        let outbox = self.outbox();
        let (verdict, answer) = oneshot::channel();
        // If the outbox is gone the answer reports it (its sender is dropped).
        let _ = outbox.send((signed.bytes.clone(), verdict));
        (
            fate,
            PoolAnswer {
                hash: signed.hash,
                answer,
            },
        )
    }

    /// Waits for the pool's verdict on a send. On a refusal the transaction
    /// is no longer watched and the nonce is re-read from the chain before
    /// the next call (a gap it left is then filled by that call, and the
    /// transactions queued behind it proceed).
    async fn verdict(
        &self,
        call: &'static str,
        nonce: u64,
        sent: PoolAnswer,
    ) -> Result<(), SubmitError> {
        let result = match sent.answer.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e @ subxt::rpcs::Error::User(_))) => {
                pool_rejection(call, Some(nonce), &e.to_string())
            }
            Ok(Err(e)) => {
                // The connection failed: the pool may or may not have it.
                // It stays watched; the tracker sends it again if the pool
                // turns out not to hold it.
                tracing::warn!(call, nonce, error = %e, "no answer from the pool; watching");
                return Ok(());
            }
            Err(_) => SubmitError::Closed,
        };
        self.tracker.forget(&sent.hash);
        *self.nonce.lock().await = None;
        Err(result)
    }

    /// Signs `call` with the next nonce and hands it to the pool; answers
    /// with the pool's verdict. What follows (the block, a re-send after a
    /// drop) runs as a task of its own holding `place`.
    async fn pool(
        self: Arc<Self>,
        call: MarketCall,
        place: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Pooled, SubmitError> {
        let name = call.name();
        // Nonces are assigned, signed and sent in order under the lock; the
        // lock is released as soon as the request is on its way, so several
        // transactions are in the pool at once. A node's pool orders them by
        // nonce whatever order they arrive in.
        let mut next = self.nonce.lock().await;
        let nonce = match *next {
            Some(n) => n,
            None => self
                .chain
                .account_nonce(self.account)
                .await
                .map_err(|e| SubmitError::Connection(ConnectionError::transport(e)))?,
        };
        let signed = match self.sign(&call, nonce).await {
            Ok(s) => s,
            Err(e) => {
                *next = None;
                return Err(e);
            }
        };
        *next = Some(nonce + 1);
        let (fate, sent) = self.send(&signed);
        drop(next);
        self.verdict(name, nonce, sent).await?;
        let (done, outcome) = oneshot::channel();
        tokio::spawn(async move {
            let included = self.include(call, nonce, fate).await;
            drop(place);
            // The caller may have stopped waiting; the block stands regardless.
            let _ = done.send(included);
        });
        Ok(Pooled::new(Some(nonce), async move {
            outcome.await.unwrap_or(Err(SubmitError::Closed))
        }))
    }

    /// Waits for a pooled transaction's block, re-signing it with the same
    /// nonce if it left the pool unincluded while the nonce is still free.
    async fn include(
        &self,
        call: MarketCall,
        nonce: u64,
        mut fate: oneshot::Receiver<Fate>,
    ) -> Result<Inclusion, SubmitError> {
        let name = call.name();
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
                        .map_err(|e| SubmitError::Connection(ConnectionError::transport(e)))?;
                    if chain_next > nonce {
                        // Another transaction took this nonce.
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
                    let signed = match self.sign(&call, nonce).await {
                        Ok(s) => s,
                        Err(e) => {
                            *self.nonce.lock().await = None;
                            return Err(e);
                        }
                    };
                    let (again, sent) = self.send(&signed);
                    self.verdict(name, nonce, sent).await?;
                    fate = again;
                }
            }
        }
    }
}

impl tower::Service<MarketCall> for SubxtSubmitter {
    type Response = Pooled;
    type Error = SubmitError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Pooled, SubmitError>> + Send>>;

    /// Ready when there is a place for one more transaction between the
    /// pool and a block ([`MAX_OUTSTANDING`] in all).
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.place.is_none() {
            match std::task::ready!(self.places.poll_acquire(cx)) {
                Some(place) => self.place = Some(place),
                None => return std::task::Poll::Ready(Err(SubmitError::Closed)),
            }
        }
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        let inner = self.inner.clone();
        let place = self.place.take();
        Box::pin(inner.pool(call, place))
    }
}

impl SubxtChain {
    /// A submitter that signs as `signer`.
    pub fn submitter(&self, signer: subxt_signer::sr25519::Keypair) -> SubxtSubmitter {
        SubxtSubmitter::new(self.clone(), signer, false)
    }

    /// A submitter that wraps each call in `Sudo::sudo`, signed by `signer`
    /// (the chain's sudo key): root calls such as `register_renderer` on a
    /// development chain. The inner call's dispatch error is reported as
    /// the call's own.
    pub fn sudo_submitter(&self, signer: subxt_signer::sr25519::Keypair) -> SubxtSubmitter {
        SubxtSubmitter::new(self.clone(), signer, true)
    }

    /// Signs and submits one call as `signer` and waits until it is final;
    /// returns its block. For one-off calls: a [`SubxtSubmitter`] owns the
    /// nonce across many.
    pub async fn submit_signed(
        &self,
        signer: &subxt_signer::sr25519::Keypair,
        call: &MarketCall,
    ) -> Result<crate::chain::BlockHash, SubmitError> {
        use crate::chain::SubmitExt;
        let inclusion = self.submitter(signer.clone()).submit(call.clone()).await?;
        Ok(inclusion.block.hash)
    }
}
