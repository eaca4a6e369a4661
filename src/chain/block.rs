//! Blocks: hashes, references, and blocks with their market events.

use std::fmt;

use parity_scale_codec::{Decode, Encode};

use super::EventRecord;
use crate::task::BlockNumber;

/// A 32-byte block hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
pub struct BlockHash(pub [u8; 32]);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}…", hex::encode(&self.0[..4]))
    }
}

/// A block by number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Its number.
    pub number: BlockNumber,
    /// Its hash.
    pub hash: BlockHash,
}

/// A block (best or finalized) with its decoded task-market events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Its number.
    pub number: BlockNumber,
    /// Its hash.
    pub hash: BlockHash,
    /// Its parent's hash.
    pub parent_hash: BlockHash,
    /// Its task-market events, in order.
    pub events: std::sync::Arc<[EventRecord]>,
}

impl Block {
    /// The block as a reference.
    pub fn block_ref(&self) -> BlockRef {
        BlockRef {
            number: self.number,
            hash: self.hash,
        }
    }
}
