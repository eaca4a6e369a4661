//! The chain port: the reads an executor needs from any backend.

use std::future::Future;
use std::pin::Pin;

use futures::Stream;

use super::{Block, BlockHash, BlockRef, ChainError, TaskIntent};
use crate::task::{AccountId, BlockNumber, TaskId};

/// A stream of blocks (finalized, or best), in order, without gaps.
pub type BlockStream = Pin<Box<dyn Stream<Item = Result<Block, ChainError>> + Send>>;

/// Reads from a chain: finalized and best blocks, task storage, nonces.
///
/// Storage reads take the block to read at, so that a task is read in the
/// state of the block whose event mentioned it.
pub trait ChainPort: Clone + Send + Sync + 'static {
    /// Finalized blocks from `from` (inclusive) on, or from the next new block
    /// when `from` is `None`. The stream has no gaps; it ends when the chain
    /// shuts down.
    fn finalized_blocks(&self, from: Option<BlockNumber>) -> BlockStream;

    /// Best blocks from `from` (inclusive) on, or from the next new best
    /// block when `from` is `None`: the chain as the node sees it now,
    /// before finality. The stream has no gaps; after a reorganisation it
    /// goes on with the new best chain's blocks. Events in best blocks are
    /// hints: act on them only in ways that can be undone.
    fn best_blocks(&self, from: Option<BlockNumber>) -> BlockStream;

    /// The best block.
    fn best_head(&self) -> impl Future<Output = Result<BlockRef, ChainError>> + Send;

    /// The latest finalized block.
    fn finalized_head(&self) -> impl Future<Output = Result<BlockRef, ChainError>> + Send;

    /// `Tasks(id)` at a block.
    fn task(
        &self,
        at: BlockHash,
        id: TaskId,
    ) -> impl Future<Output = Result<Option<TaskIntent>, ChainError>> + Send;

    /// `AssignedLane1Tasks` at a block.
    fn assigned_lane1_tasks(
        &self,
        at: BlockHash,
    ) -> impl Future<Output = Result<Vec<TaskId>, ChainError>> + Send;

    /// `OpenLane0Tasks` at a block: Lane 0 work not yet assigned (Lane 1
    /// must wait while there is any).
    fn open_lane0_tasks(
        &self,
        at: BlockHash,
    ) -> impl Future<Output = Result<Vec<TaskId>, ChainError>> + Send;

    /// `OpenLane1Tasks` at a block: candidates not yet assigned.
    fn open_lane1_tasks(
        &self,
        at: BlockHash,
    ) -> impl Future<Output = Result<Vec<TaskId>, ChainError>> + Send;

    /// The account's nonce in the state of a block: how many of its
    /// transactions the chain up to that block includes. Below
    /// [`account_nonce`](Self::account_nonce) while some of its transactions
    /// wait in the pool.
    fn account_nonce_at(
        &self,
        at: BlockHash,
        account: AccountId,
    ) -> impl Future<Output = Result<u64, ChainError>> + Send;

    /// The account's next nonce, counting transactions waiting in the pool.
    fn account_nonce(
        &self,
        account: AccountId,
    ) -> impl Future<Output = Result<u64, ChainError>> + Send;
}
