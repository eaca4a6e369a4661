// Over ~600 lines: block building, the pool, nonces and the block streams
// all work on one `State` under one lock; the pallet itself, genesis and
// the submitter are already files of their own.
//! The embedded dev chain: the task-market pallet's state machine
//! ([`pallet::Market`]) run in process, with blocks, a transaction pool,
//! per-account nonces, best- and finalized-block streams, storage history
//! and its own record of every extrinsic.
//!
//! It implements the same [`ChainPort`] as the real-chain backend, and its
//! [`DevSubmitter`] is the same kind of `tower::Service<MarketCall>`, so the
//! executor runs unchanged on either. The finalized head trails the best
//! block by a finality lag (2 blocks by default when blocks come on a clock,
//! 0 when they come with transactions or by hand).
//!
//! ```
//! use nsn_lane1::chain::dev::{DevChain, DevConfig};
//! use nsn_lane1::chain::{ChainPort, MarketCall, MarketEvent, SubmitExt};
//! use nsn_lane1::task::{AccountId, Lane, Priority, UNIT};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let chain = DevChain::new(DevConfig::default()).unwrap();
//! let alice = chain.submitter(AccountId::ALICE);
//! // The pool's verdict, then the block (`submit` waits for both).
//! let inclusion = alice
//!     .submit(MarketCall::CreateTaskIntent {
//!         lane: Lane::Lane1,
//!         priority: Priority::Normal,
//!         model_requirements: b"sha256".to_vec(),
//!         input_cid: b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".to_vec(),
//!         compute_budget: 1_000,
//!         deadline_blocks: 50,
//!         escrow_amount: UNIT,
//!     })
//!     .await
//!     .unwrap();
//! assert!(matches!(inclusion.events[0], MarketEvent::TaskCreated { .. }));
//! let head = chain.finalized_head().await.unwrap();
//! assert_eq!(head.number, inclusion.block.number);
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use parity_scale_codec::Encode;
use tokio::sync::{oneshot, watch};

use crate::chain::{
    Block, BlockHash, BlockRef, BlockStream, ChainError, ChainPort, DispatchError, EventRecord,
    Inclusion, InvalidTransaction, MarketCall, MarketEvent, Phase, SubmitError, TaskIntent,
};
use crate::task::{AccountId, BlockNumber, TaskId};

mod genesis;
pub mod pallet;
mod submitter;

pub use genesis::{DEV_LANE0_MODEL, DEV_LANE1_MODELS, DevGenesis, TREASURY};
pub use submitter::{DevSubmitter, SubmitFuture};

pub use pallet::{
    AccountData, Attestation, ExecutorInfo, GenesisError, Market, MarketParams, Origin,
    RendererInfo, SlashCause, SlashCounts,
};

use pallet::{BlockCtx, blake2_256};

/// How the dev chain builds blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockMode {
    /// One block per transaction, built as it is submitted (for tests).
    Instant,
    /// Blocks are built only by [`DevChain::produce_block`] (for tests of
    /// hooks and pipelining).
    Manual,
    /// A block every interval, holding every ready transaction (for demos).
    /// Needs a running tokio runtime.
    Interval(Duration),
}

/// The dev chain's configuration.
#[derive(Clone, Debug)]
pub struct DevConfig {
    /// Genesis state.
    pub genesis: DevGenesis,
    /// How blocks are built.
    pub block_mode: BlockMode,
    /// When set, the genesis validators attest every submitted result with
    /// this score (as many as the quorum needs), in the blocks after it.
    pub auto_attest: Option<u8>,
    /// Most transactions waiting in the pool.
    pub max_pool: usize,
    /// How many blocks the finalized head trails the best head by (`None`:
    /// 2 in [`BlockMode::Interval`], as a real chain's finality trails its
    /// best block; 0 otherwise, where blocks come only with transactions or
    /// by hand).
    pub finality_lag: Option<u32>,
}

impl DevConfig {
    /// The finality lag in effect.
    pub fn finality_lag(&self) -> u32 {
        self.finality_lag.unwrap_or(match self.block_mode {
            BlockMode::Interval(_) => 2,
            BlockMode::Instant | BlockMode::Manual => 0,
        })
    }
}

impl Default for DevConfig {
    /// The development genesis, instant blocks, validators attesting 90.
    fn default() -> Self {
        DevConfig {
            genesis: DevGenesis::development(),
            block_mode: BlockMode::Instant,
            auto_attest: Some(90),
            max_pool: 8192,
            finality_lag: None,
        }
    }
}

/// Why the dev chain could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevChainError {
    /// The genesis configuration was refused.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
    /// Interval mode needs a tokio runtime to build blocks on.
    #[error("interval block mode needs a running tokio runtime")]
    NoRuntime,
    /// The score is over 100.
    #[error("auto-attest score {0} is over 100")]
    InvalidScore(u8),
}

/// An extrinsic the dev chain included in a block, with its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extrinsic {
    /// The block it is in.
    pub block: BlockNumber,
    /// Its index in the block.
    pub index: u32,
    /// Who made it.
    pub origin: Origin,
    /// The call.
    pub call: MarketCall,
    /// Its dispatch result.
    pub result: Result<(), DispatchError>,
    /// The nonce it used (0 for root).
    pub nonce: u64,
}

/// What a [`DevChain::fork`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fork {
    /// The blocks taken back, lowest first.
    pub retracted: Vec<BlockRef>,
    /// The new branch's blocks, lowest first (one more than were retracted,
    /// so that the new branch is the longer one, as in a real re-org).
    pub enacted: Vec<BlockRef>,
    /// The retracted extrinsics that returned to the pool.
    pub repooled: Vec<Extrinsic>,
    /// The retracted extrinsics the new branch never gets.
    pub discarded: Vec<Extrinsic>,
}

/// Why a fork was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForkError {
    /// Forks were not enabled, or not this deep
    /// ([`DevChain::enable_forks`]).
    #[error("forks of depth {depth} are not enabled (at most {enabled})")]
    TooDeep {
        /// The depth asked for.
        depth: u32,
        /// The deepest fork enabled.
        enabled: u32,
    },
    /// Finality never goes back: a fork only retracts blocks not final.
    #[error(
        "a fork of depth {depth} would retract final blocks (best {best}, finalized {finalized})"
    )]
    Final {
        /// The depth asked for.
        depth: u32,
        /// The best block.
        best: BlockNumber,
        /// The finalized block.
        finalized: BlockNumber,
    },
    /// A fork must retract at least one block.
    #[error("a fork retracts at least one block")]
    Empty,
}

/// The state after a block, kept while the block may still be retracted.
struct Snapshot {
    number: BlockNumber,
    market: Market,
    nonces: HashMap<AccountId, u64>,
}

/// A transaction waiting in the pool.
struct PoolTx {
    origin: Origin,
    call: MarketCall,
    nonce: u64,
    reply: Option<oneshot::Sender<Result<Inclusion, SubmitError>>>,
    /// Not included before this block (a transaction delayed on its way,
    /// holding back the account's later ones, as an out-of-order delivery
    /// does).
    held_until: BlockNumber,
}

/// Versions of one value, by the block that wrote them.
#[derive(Debug)]
struct History<T> {
    versions: Vec<(BlockNumber, T)>,
}

impl<T> History<T> {
    fn new() -> Self {
        History {
            versions: Vec::new(),
        }
    }

    fn record(&mut self, block: BlockNumber, value: T) {
        self.versions.push((block, value));
    }

    fn at(&self, block: BlockNumber) -> Option<&T> {
        let idx = self.versions.partition_point(|(b, _)| *b <= block);
        idx.checked_sub(1).map(|i| &self.versions[i].1)
    }
}

struct State {
    market: Market,
    blocks: Vec<Block>,
    by_hash: HashMap<BlockHash, BlockNumber>,
    tasks: HashMap<TaskId, History<Option<TaskIntent>>>,
    /// Every change to `AssignedLane1Tasks`, in order: (block, task, added).
    /// A read at a block replays them, so history costs one entry per change.
    assigned: Vec<(BlockNumber, TaskId, bool)>,
    nonces: HashMap<AccountId, u64>,
    /// Each account's nonce by the block that changed it.
    nonce_history: HashMap<AccountId, History<u64>>,
    pool: VecDeque<PoolTx>,
    /// Every extrinsic included, in order.
    extrinsics: Vec<Extrinsic>,
    mode: BlockMode,
    auto_attest: Option<u8>,
    max_pool: usize,
    finality_lag: u32,
    /// The finalized head's number (`finality_lag` behind the best block).
    finalized: BlockNumber,
    /// Finality does not move while set (a stalled finality gadget).
    finality_stalled: bool,
    /// How deep a fork may go (0: forks off, no snapshots kept).
    fork_depth: u32,
    /// The state after each block a fork may return to.
    snapshots: VecDeque<Snapshot>,
    /// How many forks there were (it salts new blocks' hashes).
    branch: u32,
    /// Each fork's point (the last block kept), for the best streams.
    fork_points: Vec<BlockNumber>,
    /// Extrinsics of retracted blocks.
    retracted: Vec<Extrinsic>,
    closed: bool,
    /// Blocks below this one can no longer be read ([`DevChain::prune_below`]).
    pruned_below: BlockNumber,
}

/// The best and finalized heads' numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Heads {
    best: BlockNumber,
    finalized: BlockNumber,
}

struct Shared {
    state: Mutex<State>,
    head: watch::Sender<Heads>,
}

/// A handle to the embedded dev chain. Clones share one chain.
#[derive(Clone)]
pub struct DevChain {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DevChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevChain")
            .field("heads", &*self.shared.head.borrow())
            .finish()
    }
}

impl DevChain {
    /// Builds genesis and starts the chain. In [`BlockMode::Interval`] this
    /// spawns the block builder on the current tokio runtime; it stops when
    /// the last handle is dropped or [`shutdown`](Self::shutdown) is called.
    pub fn new(config: DevConfig) -> Result<Self, DevChainError> {
        if let Some(score) = config.auto_attest.filter(|s| *s > 100) {
            return Err(DevChainError::InvalidScore(score));
        }
        let mut market = config.genesis.build()?;
        let genesis_hash = BlockHash(blake2_256(b"nsn-lane1/dev-chain/genesis"));
        let genesis = Block {
            number: 0,
            hash: genesis_hash,
            parent_hash: BlockHash::default(),
            // What genesis deposited (its renderers' registrations).
            events: market.take_events().into(),
        };
        let state = State {
            market,
            blocks: vec![genesis],
            by_hash: HashMap::from([(genesis_hash, 0)]),
            tasks: HashMap::new(),
            assigned: Vec::new(),
            nonces: HashMap::new(),
            nonce_history: HashMap::new(),
            pool: VecDeque::new(),
            extrinsics: Vec::new(),
            mode: config.block_mode,
            auto_attest: config.auto_attest,
            max_pool: config.max_pool,
            finality_lag: config.finality_lag(),
            finalized: 0,
            finality_stalled: false,
            fork_depth: 0,
            snapshots: VecDeque::new(),
            branch: 0,
            fork_points: Vec::new(),
            retracted: Vec::new(),
            closed: false,
            pruned_below: 0,
        };
        let (head, _) = watch::channel(Heads::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            head,
        });
        if let BlockMode::Interval(period) = config.block_mode {
            let handle =
                tokio::runtime::Handle::try_current().map_err(|_| DevChainError::NoRuntime)?;
            handle.spawn(build_blocks_every(Arc::downgrade(&shared), period));
        }
        Ok(DevChain { shared })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// A submitter that signs as `account`.
    pub fn submitter(&self, account: AccountId) -> DevSubmitter {
        DevSubmitter {
            shared: self.shared.clone(),
            origin: Origin::Signed(account),
        }
    }

    /// A submitter with root origin (as `sudo` on a real chain).
    pub fn sudo(&self) -> DevSubmitter {
        DevSubmitter {
            shared: self.shared.clone(),
            origin: Origin::Root,
        }
    }

    /// Builds one block from the ready transactions in the pool (all of them,
    /// or one in instant mode) and returns it.
    pub fn produce_block(&self) -> Block {
        let mut st = self.lock();
        produce_block(&self.shared, &mut st)
    }

    /// Discards the state of every block below `number`, as a node that
    /// prunes old state does (a full node keeps 256 blocks): a block
    /// stream asked for one of them answers [`ChainError::Pruned`].
    pub fn prune_below(&self, number: BlockNumber) {
        let mut st = self.lock();
        st.pruned_below = st.pruned_below.max(number);
    }

    /// Builds `n` blocks; returns the last.
    pub fn produce_blocks(&self, n: u32) -> Option<Block> {
        let mut last = None;
        for _ in 0..n {
            last = Some(self.produce_block());
        }
        last
    }

    /// Sets the chain-wide bound on results waiting for verification from
    /// the next call on (`MaxPendingVerifications`; 1000 at genesis).
    pub fn set_max_pending_verifications(&self, max: u32) {
        let mut st = self.lock();
        st.market.set_max_pending_verifications(max);
        // A parameter, not a block's doing: a fork keeps it.
        for snapshot in &mut st.snapshots {
            snapshot.market.set_max_pending_verifications(max);
        }
    }

    /// Keeps what a fork up to `depth` blocks deep needs (the state after
    /// each of the last `depth` blocks not yet final), from now on.
    pub fn enable_forks(&self, depth: u32) {
        let mut st = self.lock();
        st.fork_depth = depth;
        st.snapshot();
    }

    /// Stops finality (`true`: the finalized head stays where it is while
    /// best blocks go on) or lets it go on (`false`: it catches up at the
    /// next block).
    pub fn stall_finality(&self, stalled: bool) {
        self.lock().finality_stalled = stalled;
    }

    /// Forks the chain: the last `depth` best blocks (none of them final)
    /// are retracted and a new branch, one block longer, is built from the
    /// block before them and becomes the best chain. Retracted extrinsics
    /// that `keep` selects return to the pool (as a node's pool resubmits
    /// them) and are in the new branch; the others are discarded, and their
    /// accounts' later transactions wait behind the gap until a transaction
    /// with the missing nonce fills it. Best-block streams go on
    /// with the new branch from its first block; finalized streams are
    /// untouched, as finality never goes back.
    pub fn fork(
        &self,
        depth: u32,
        keep: impl Fn(&Origin, &MarketCall) -> bool,
    ) -> Result<Fork, ForkError> {
        self.fork_with(|_| depth, keep)
    }

    /// [`fork`](Self::fork) from block `first` on: every best block from
    /// it up is retracted (as one step: no block is built meanwhile).
    pub fn fork_from(
        &self,
        first: BlockNumber,
        keep: impl Fn(&Origin, &MarketCall) -> bool,
    ) -> Result<Fork, ForkError> {
        self.fork_with(|best| (best + 1).saturating_sub(first), keep)
    }

    fn fork_with(
        &self,
        depth: impl FnOnce(BlockNumber) -> u32,
        keep: impl Fn(&Origin, &MarketCall) -> bool,
    ) -> Result<Fork, ForkError> {
        let mut st = self.lock();
        let best = st.blocks.last().map_or(0, |b| b.number);
        let depth = depth(best);
        let fork = st.retract(depth, keep)?;
        let mut fork = fork;
        for _ in 0..=depth {
            let block = produce_block(&self.shared, &mut st);
            fork.enacted.push(block.block_ref());
        }
        Ok(fork)
    }

    /// The extrinsics of the best chain from block `first` on.
    pub fn extrinsics_since(&self, first: BlockNumber) -> Vec<Extrinsic> {
        let st = self.lock();
        let from = st.extrinsics.partition_point(|x| x.block < first);
        st.extrinsics[from..].to_vec()
    }

    /// Extrinsics of retracted blocks, in the order they were included.
    pub fn retracted_extrinsics(&self) -> Vec<Extrinsic> {
        self.lock().retracted.clone()
    }

    /// Reads the pallet's current state.
    pub fn with_market<R>(&self, f: impl FnOnce(&Market) -> R) -> R {
        f(&self.lock().market)
    }

    /// The best block's number.
    pub fn head_number(&self) -> BlockNumber {
        self.shared.head.borrow().best
    }

    /// The finalized head's number.
    pub fn finalized_number(&self) -> BlockNumber {
        self.shared.head.borrow().finalized
    }

    /// Builds blocks until block `number` is final (or none while finality
    /// is stalled); returns the finalized head's number.
    pub fn finalize_to(&self, number: BlockNumber) -> BlockNumber {
        let mut st = self.lock();
        while st.finalized < number && !st.finality_stalled {
            produce_block(&self.shared, &mut st);
        }
        st.finalized
    }

    /// Transactions waiting in the pool.
    pub fn pool_len(&self) -> usize {
        self.lock().pool.len()
    }

    /// Every extrinsic included so far, in block order: the chain's own
    /// record of who sent what (tests count calls with it).
    pub fn extrinsics(&self) -> Vec<Extrinsic> {
        self.lock().extrinsics.clone()
    }

    /// Fault injection: drops the `pick`-th (modulo their number) signed
    /// transaction in the pool that `which` selects, with every later one of
    /// the same account (a real pool drops a transaction's dependents with
    /// it). Each dropped transaction's submitter is told
    /// [`SubmitError::Dropped`]. Returns what was dropped, in nonce order.
    pub fn drop_pooled(
        &self,
        pick: usize,
        which: impl Fn(&Origin, &MarketCall) -> bool,
    ) -> Vec<(Origin, MarketCall)> {
        let mut st = self.lock();
        let candidates: Vec<usize> = (0..st.pool.len())
            .filter(|i| {
                let tx = &st.pool[*i];
                matches!(tx.origin, Origin::Signed(_)) && which(&tx.origin, &tx.call)
            })
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let chosen = &st.pool[candidates[pick % candidates.len()]];
        let (origin, from) = (chosen.origin, chosen.nonce);
        let (dropped, kept): (Vec<PoolTx>, Vec<PoolTx>) = st
            .pool
            .drain(..)
            .partition(|tx| tx.origin == origin && tx.nonce >= from);
        st.pool = kept.into();
        let mut dropped = dropped;
        dropped.sort_by_key(|tx| tx.nonce);
        drop(st);
        dropped
            .into_iter()
            .map(|tx| {
                if let Some(reply) = tx.reply {
                    let _ = reply.send(Err(SubmitError::Dropped {
                        call: tx.call.name(),
                    }));
                }
                (tx.origin, tx.call)
            })
            .collect()
    }

    /// Fault injection: holds the `pick`-th (modulo their number) pooled
    /// transaction that `which` selects out of the next `blocks` blocks; the
    /// account's later transactions wait behind it (as they do for one
    /// delivered out of order). Returns the held call.
    pub fn hold_pooled(
        &self,
        pick: usize,
        blocks: u32,
        which: impl Fn(&Origin, &MarketCall) -> bool,
    ) -> Option<MarketCall> {
        let mut st = self.lock();
        let next_block = st.blocks.last().map_or(1, |b| b.number + 1);
        let candidates: Vec<usize> = (0..st.pool.len())
            .filter(|i| {
                let tx = &st.pool[*i];
                matches!(tx.origin, Origin::Signed(_)) && which(&tx.origin, &tx.call)
            })
            .collect();
        let i = *candidates.get(pick % candidates.len().max(1))?;
        let tx = &mut st.pool[i];
        tx.held_until = next_block + blocks;
        Some(tx.call.clone())
    }

    /// Stops the chain: pending transactions fail with
    /// [`SubmitError::Closed`], streams end, new submissions are refused.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.closed = true;
        for tx in st.pool.drain(..) {
            if let Some(reply) = tx.reply {
                let _ = reply.send(Err(SubmitError::Closed));
            }
        }
        drop(st);
        // Wake every stream so it sees `closed`.
        self.shared.head.send_modify(|_| {});
    }

    /// A lane's open queue at a block. A task is in it exactly while it is
    /// an open task of the lane, and the queue's order is a function of the
    /// tasks' fields, so the queue at a block is those tasks in that order.
    fn open_tasks_at(
        &self,
        at: BlockHash,
        lane: crate::task::Lane,
    ) -> Result<Vec<TaskId>, ChainError> {
        let st = self.lock();
        let number = self.number_of(&st, at)?;
        let mut open: Vec<TaskIntent> = st
            .tasks
            .values()
            .filter_map(|h| h.at(number).cloned().flatten())
            .filter(|t| t.lane == lane && t.status == crate::task::TaskStatus::Open)
            .collect();
        open.sort_by_key(Market::open_order);
        Ok(open.into_iter().map(|t| t.id).collect())
    }

    fn number_of(&self, st: &State, at: BlockHash) -> Result<BlockNumber, ChainError> {
        st.by_hash
            .get(&at)
            .copied()
            .ok_or(ChainError::UnknownBlock(at))
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while the lock was held cannot leave the state half-written
    // (calls validate before they mutate), so a poisoned lock is still usable.
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn build_blocks_every(shared: Weak<Shared>, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut st = lock(&shared);
        if st.closed {
            return;
        }
        produce_block(&shared, &mut st);
    }
}

impl State {
    /// Keeps the state after the best block, for a fork that returns to it.
    fn snapshot(&mut self) {
        if self.fork_depth == 0 {
            return;
        }
        let number = self.blocks.last().map_or(0, |b| b.number);
        self.snapshots.push_back(Snapshot {
            number,
            market: self.market.clone(),
            nonces: self.nonces.clone(),
        });
        let oldest = number
            .saturating_sub(self.fork_depth)
            .max(self.finalized.min(number));
        while self.snapshots.front().is_some_and(|s| s.number < oldest) {
            self.snapshots.pop_front();
        }
    }

    /// Takes back the last `depth` blocks (see [`DevChain::fork`]); the new
    /// branch is built by the caller.
    fn retract(
        &mut self,
        depth: u32,
        keep: impl Fn(&Origin, &MarketCall) -> bool,
    ) -> Result<Fork, ForkError> {
        let best = self.blocks.last().map_or(0, |b| b.number);
        if depth == 0 {
            return Err(ForkError::Empty);
        }
        if depth > self.fork_depth {
            return Err(ForkError::TooDeep {
                depth,
                enabled: self.fork_depth,
            });
        }
        let point = best.checked_sub(depth).filter(|p| *p >= self.finalized);
        let Some(point) = point else {
            return Err(ForkError::Final {
                depth,
                best,
                finalized: self.finalized,
            });
        };
        let Some(snapshot) = self.snapshots.iter().find(|s| s.number == point) else {
            return Err(ForkError::TooDeep {
                depth,
                enabled: self.fork_depth,
            });
        };
        self.market = snapshot.market.clone();
        self.nonces = snapshot.nonces.clone();
        self.snapshots.retain(|s| s.number <= point);
        let mut fork = Fork::default();
        for block in self.blocks.drain(point as usize + 1..) {
            self.by_hash.remove(&block.hash);
            fork.retracted.push(block.block_ref());
        }
        for history in self.tasks.values_mut() {
            history.versions.retain(|(b, _)| *b <= point);
        }
        self.tasks.retain(|_, h| !h.versions.is_empty());
        self.assigned.retain(|(b, _, _)| *b <= point);
        for history in self.nonce_history.values_mut() {
            history.versions.retain(|(b, _)| *b <= point);
        }
        let cut = self.extrinsics.partition_point(|x| x.block <= point);
        let retracted: Vec<Extrinsic> = self.extrinsics.drain(cut..).collect();
        self.retracted.extend(retracted.iter().cloned());
        // What `keep` rejects is gone; the rest is the pool's again. An
        // account's transactions after a discarded one wait behind the gap
        // at its nonce (as a node's pool keeps them in its future queue)
        // until a transaction with that nonce fills it.
        let (repool, discarded): (Vec<Extrinsic>, Vec<Extrinsic>) = retracted
            .into_iter()
            .partition(|x| matches!(x.origin, Origin::Root) || keep(&x.origin, &x.call));
        for x in repool.iter().rev() {
            self.pool.push_front(PoolTx {
                origin: x.origin,
                call: x.call.clone(),
                nonce: x.nonce,
                reply: None,
                held_until: 0,
            });
        }
        fork.repooled = repool;
        fork.discarded = discarded;
        self.branch += 1;
        self.fork_points.push(point);
        Ok(fork)
    }

    /// The account's next nonce, counting its transactions in the pool that
    /// follow on from its nonce without a gap (as a real pool's ready queue).
    fn next_index(&self, who: &AccountId) -> u64 {
        let mut next = self.nonces.get(who).copied().unwrap_or(0);
        let mut pooled: Vec<u64> = self
            .pool
            .iter()
            .filter(|tx| tx.origin == Origin::Signed(*who))
            .map(|tx| tx.nonce)
            .collect();
        pooled.sort_unstable();
        for nonce in pooled {
            if nonce == next {
                next += 1;
            } else if nonce > next {
                break;
            }
        }
        next
    }

    fn push(
        &mut self,
        origin: Origin,
        call: MarketCall,
        nonce: Option<u64>,
        reply: Option<oneshot::Sender<Result<Inclusion, SubmitError>>>,
    ) -> Result<u64, SubmitError> {
        let name = call.name();
        let invalid = |reason| SubmitError::Invalid { call: name, reason };
        if self.closed {
            return Err(SubmitError::Closed);
        }
        Market::check_call_bounds(&call).map_err(|e| invalid(InvalidTransaction::BadCall(e)))?;
        if self.pool.len() >= self.max_pool {
            return Err(invalid(InvalidTransaction::PoolFull));
        }
        let nonce = match origin {
            Origin::Root => 0,
            Origin::Signed(who) => {
                let expected = self.nonces.get(&who).copied().unwrap_or(0);
                let nonce = nonce.unwrap_or_else(|| self.next_index(&who));
                if nonce < expected {
                    return Err(invalid(InvalidTransaction::Stale { nonce, expected }));
                }
                if self
                    .pool
                    .iter()
                    .any(|tx| tx.origin == origin && tx.nonce == nonce)
                {
                    return Err(invalid(InvalidTransaction::PriorityTooLow { nonce }));
                }
                nonce
            }
        };
        self.pool.push_back(PoolTx {
            origin,
            call,
            nonce,
            reply,
            held_until: 0,
        });
        Ok(nonce)
    }

    /// True when the transaction can go into the next block.
    fn is_ready(&self, tx: &PoolTx) -> bool {
        let next_block = self.blocks.last().map_or(1, |b| b.number + 1);
        if tx.held_until > next_block {
            return false;
        }
        match tx.origin {
            Origin::Root => true,
            Origin::Signed(who) => self.nonces.get(&who).copied().unwrap_or(0) == tx.nonce,
        }
    }

    fn has_ready(&self) -> bool {
        self.pool.iter().any(|tx| self.is_ready(tx))
    }
}

/// A transaction applied in a block: what it was, its dispatch result, its
/// index, and the events it emitted.
type Applied = (PoolTx, Result<(), DispatchError>, u32, Vec<MarketEvent>);

type Reply = (
    Option<oneshot::Sender<Result<Inclusion, SubmitError>>>,
    Result<Inclusion, SubmitError>,
);

fn produce_block(shared: &Shared, st: &mut State) -> Block {
    let parent = st.blocks.last().map(|b| (b.number, b.hash));
    let (parent_number, parent_hash) = parent.unwrap_or((0, BlockHash::default()));
    let number = parent_number + 1;
    let ctx = BlockCtx {
        number,
        parent_hash,
    };
    st.market.on_initialize(number);

    let one_per_block = st.mode == BlockMode::Instant;
    let mut applied: Vec<Applied> = Vec::new();
    let mut index = 0u32;
    'fill: loop {
        let Some(pos) = st.pool.iter().position(|tx| st.is_ready(tx)) else {
            break 'fill;
        };
        let Some(tx) = st.pool.remove(pos) else {
            break 'fill;
        };
        st.market.set_phase(Phase::ApplyExtrinsic(index));
        let start = st.market.event_count();
        let result = st.market.dispatch(tx.origin, tx.call.clone(), ctx);
        let events = st
            .market
            .events_since(start)
            .map(|r| r.event.clone())
            .collect();
        if let Origin::Signed(who) = tx.origin {
            *st.nonces.entry(who).or_insert(0) += 1;
        }
        st.extrinsics.push(Extrinsic {
            block: number,
            index,
            origin: tx.origin,
            call: tx.call.clone(),
            result: result.clone(),
            nonce: tx.nonce,
        });
        applied.push((tx, result, index, events));
        index += 1;
        if one_per_block {
            break 'fill;
        }
    }

    let events: Vec<EventRecord> = st.market.take_events();
    let mut preimage = parent_hash.0.to_vec();
    preimage.extend_from_slice(&number.to_le_bytes());
    if st.branch > 0 {
        // A block on another branch is another block, events alike or not.
        preimage.extend_from_slice(&st.branch.to_le_bytes());
    }
    for r in &events {
        (r.phase, &r.event).encode_to(&mut preimage);
    }
    let hash = BlockHash(blake2_256(&preimage));
    let block_ref = BlockRef { number, hash };

    let (touched, assigned_log) = st.market.take_touched();
    for id in touched {
        let value = st.market.task(id).cloned();
        st.tasks
            .entry(id)
            .or_insert_with(History::new)
            .record(number, value);
    }
    for (id, added) in assigned_log {
        st.assigned.push((number, id, added));
    }
    for (tx, ..) in &applied {
        if let Origin::Signed(who) = tx.origin {
            let nonce = st.nonces.get(&who).copied().unwrap_or(0);
            let history = st.nonce_history.entry(who).or_insert_with(History::new);
            if history.versions.last().is_none_or(|(b, _)| *b != number) {
                history.record(number, nonce);
            } else if let Some(last) = history.versions.last_mut() {
                last.1 = nonce;
            }
        }
    }

    let block = Block {
        number,
        hash,
        parent_hash,
        events: events.into(),
    };
    st.blocks.push(block.clone());
    st.by_hash.insert(hash, number);

    // Dev validators attest what was submitted in this block.
    if let Some(score) = st.auto_attest {
        let quorum = st.market.params().verification_quorum as usize;
        let validators: Vec<AccountId> = st
            .market
            .validators()
            .iter()
            .take(quorum)
            .copied()
            .collect();
        let submitted: Vec<TaskId> = block
            .events
            .iter()
            .filter_map(|r| match &r.event {
                MarketEvent::TaskSubmitted { task_id, .. } => Some(*task_id),
                _ => None,
            })
            .collect();
        for task_id in submitted {
            for v in &validators {
                // A refused attestation (pool full) only delays verification
                // to the deadline hook; nothing else depends on it.
                let _ = st.push(
                    Origin::Signed(*v),
                    MarketCall::SubmitAttestation {
                        task_id,
                        score,
                        attestation_cid: None,
                    },
                    None,
                    None,
                );
            }
        }
    }

    let replies: Vec<Reply> = applied
        .into_iter()
        .map(|(tx, result, index, events)| {
            let outcome = match result {
                Ok(()) => Ok(Inclusion {
                    block: block_ref,
                    index,
                    nonce: tx.nonce,
                    events,
                }),
                Err(error) => Err(SubmitError::Dispatch {
                    call: tx.call.name(),
                    error,
                    block: block_ref,
                }),
            };
            (tx.reply, outcome)
        })
        .collect();
    if !st.finality_stalled {
        st.finalized = number.saturating_sub(st.finality_lag).max(st.finalized);
    }
    st.snapshot();
    shared.head.send_replace(Heads {
        best: number,
        finalized: st.finalized,
    });
    for (reply, outcome) in replies {
        if let Some(reply) = reply {
            // The submitter may have been dropped; the block stands regardless.
            let _ = reply.send(outcome);
        }
    }
    block
}

/// Which head a block stream follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Follow {
    Best,
    Finalized,
}

impl Heads {
    fn of(self, follow: Follow) -> BlockNumber {
        match follow {
            Follow::Best => self.best,
            Follow::Finalized => self.finalized,
        }
    }
}

/// Blocks up to the followed head, from `from` (or the block after the head)
/// on, without gaps. After a fork a best stream goes on from the new
/// branch's first block (a number it has passed: the sign of a re-org).
fn follow(shared: Arc<Shared>, from: Option<BlockNumber>, head: Follow) -> BlockStream {
    let rx = shared.head.subscribe();
    let start = from.unwrap_or_else(|| shared.head.borrow().of(head) + 1);
    let forks_seen = lock(&shared).fork_points.len();
    Box::pin(futures::stream::unfold(
        (shared, rx, start, forks_seen),
        move |(shared, mut rx, mut next, mut forks_seen)| async move {
            loop {
                {
                    let st = lock(&shared);
                    if head == Follow::Best {
                        for point in &st.fork_points[forks_seen..] {
                            next = next.min(point + 1);
                        }
                    }
                    forks_seen = st.fork_points.len();
                    let top = shared.head.borrow().of(head);
                    if next < st.pruned_below {
                        drop(st);
                        let pruned = ChainError::Pruned { block: next };
                        return Some((Err(pruned), (shared, rx, next, forks_seen)));
                    }
                    if next <= top
                        && let Some(block) = st.blocks.get(next as usize)
                    {
                        let block = block.clone();
                        drop(st);
                        return Some((Ok(block), (shared, rx, next + 1, forks_seen)));
                    }
                    if st.closed {
                        return None;
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    ))
}

impl ChainPort for DevChain {
    fn finalized_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        follow(self.shared.clone(), from, Follow::Finalized)
    }

    fn best_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        follow(self.shared.clone(), from, Follow::Best)
    }

    async fn finalized_head(&self) -> Result<BlockRef, ChainError> {
        let st = self.lock();
        st.blocks
            .get(st.finalized as usize)
            .map(Block::block_ref)
            .ok_or(ChainError::Closed)
    }

    async fn best_head(&self) -> Result<BlockRef, ChainError> {
        let st = self.lock();
        st.blocks
            .last()
            .map(Block::block_ref)
            .ok_or(ChainError::Closed)
    }

    async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        let st = self.lock();
        let number = self.number_of(&st, at)?;
        Ok(st
            .tasks
            .get(&id)
            .and_then(|h| h.at(number))
            .cloned()
            .flatten())
    }

    async fn open_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.open_tasks_at(at, crate::task::Lane::Lane1)
    }

    async fn open_lane0_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.open_tasks_at(at, crate::task::Lane::Lane0)
    }

    async fn assigned_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        let st = self.lock();
        let number = self.number_of(&st, at)?;
        // Replay the changes up to the block, keeping the pallet's order
        // (insertion order; a removal leaves the rest in place).
        let upto = st.assigned.partition_point(|(b, _, _)| *b <= number);
        let mut seq: std::collections::BTreeMap<u64, TaskId> = std::collections::BTreeMap::new();
        let mut pos: HashMap<TaskId, u64> = HashMap::new();
        for (i, (_, id, added)) in st.assigned[..upto].iter().enumerate() {
            if *added {
                seq.insert(i as u64, *id);
                pos.insert(*id, i as u64);
            } else if let Some(p) = pos.remove(id) {
                seq.remove(&p);
            }
        }
        Ok(seq.into_values().collect())
    }

    async fn account_nonce(&self, account: AccountId) -> Result<u64, ChainError> {
        Ok(self.lock().next_index(&account))
    }

    async fn account_nonce_at(&self, at: BlockHash, account: AccountId) -> Result<u64, ChainError> {
        let st = self.lock();
        let number = self.number_of(&st, at)?;
        Ok(st
            .nonce_history
            .get(&account)
            .and_then(|h| h.at(number))
            .copied()
            .unwrap_or(0))
    }
}
