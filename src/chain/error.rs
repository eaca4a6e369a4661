//! What can go wrong with a chain: module errors by variant name, dispatch
//! errors, pool refusals, submission and read failures.

use std::fmt;
use std::str::FromStr;

use super::{BlockHash, BlockRef, PALLET};
use crate::task::BlockNumber;

macro_rules! market_errors {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// The pallet's module errors, by variant name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum MarketError {
            $($(#[$doc])* $name,)*
        }

        impl MarketError {
            /// Every variant, in the pallet's order.
            pub const ALL: &'static [MarketError] = &[$(MarketError::$name,)*];

            /// The variant's name, as the chain's metadata spells it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(MarketError::$name => stringify!($name),)*
                }
            }
        }

        impl FromStr for MarketError {
            type Err = UnknownMarketError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $(stringify!($name) => Ok(MarketError::$name),)*
                    _ => Err(UnknownMarketError(s.to_owned())),
                }
            }
        }
    };
}

market_errors! {
    /// No task with this id.
    TaskNotFound,
    /// The task is not open.
    TaskNotOpen,
    /// The task is not assigned.
    TaskNotAssigned,
    /// The task is not assigned or executing.
    TaskNotExecuting,
    /// The task has no result under verification.
    TaskNotSubmitted,
    /// The origin is not the task's executor.
    NotExecutor,
    /// The origin is not a validator.
    NotValidator,
    /// The validator attested this task already.
    DuplicateAttestation,
    /// The task has all the attestations it can take.
    TooManyAttestations,
    /// The score is over 100.
    InvalidAttestationScore,
    /// The configured quorum is unusable.
    InvalidVerificationQuorum,
    /// The verification window has ended.
    VerificationDeadlinePassed,
    /// Neither quorum nor the verification deadline has been reached.
    VerificationPending,
    /// The origin is not the task's requester.
    NotRequester,
    /// The lane's open-task list is full.
    TooManyPendingTasks,
    /// The assigned Lane 1 task list is full.
    TooManyAssignedLane1Tasks,
    /// The pending-verification list is full.
    TooManyPendingVerifications,
    /// Arithmetic overflow.
    Overflow,
    /// The requester cannot cover the escrow.
    InsufficientBalance,
    /// The escrow is under `MinEscrow`.
    InsufficientEscrow,
    /// The deadline is zero blocks away.
    InvalidDeadline,
    /// The task has an executor already.
    TaskAlreadyAssigned,
    /// No executor is eligible for the lane.
    NoEligibleExecutors,
    /// Lane 0 tasks are open: Lane 1 must wait.
    Lane0Priority,
    /// Burning the burn share failed.
    BurnFailed,
    /// The renderer registry is full.
    RendererRegistryFull,
    /// The renderer is registered already.
    RendererAlreadyRegistered,
    /// The renderer id is empty or too long.
    InvalidRendererId,
    /// The renderer is not registered.
    RendererNotRegistered,
    /// The renderer serves another lane.
    RendererLaneMismatch,
    /// The renderer's latency is over the lane's limit.
    RendererLatencyExceeded,
    /// A Lane 0 renderer must be deterministic.
    RendererNotDeterministic,
    /// The renderer needs more VRAM than allowed.
    RendererVramExceeded,
    /// Lane 0 results need an attestation CID.
    MissingAttestation,
    /// The attestation CID is empty or too long.
    InvalidAttestationCid,
}

impl fmt::Display for MarketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A module error name that is not one of the task market's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a task-market error")]
pub struct UnknownMarketError(pub String);

/// Why an included extrinsic failed to dispatch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// A pallet's module error, by pallet and variant name.
    #[error("{pallet}::{error}")]
    Module {
        /// The pallet's name.
        pallet: String,
        /// The error variant's name.
        error: String,
    },
    /// The origin may not make this call.
    #[error("bad origin")]
    BadOrigin,
    /// Any other dispatch error, as the chain described it.
    #[error("{0}")]
    Other(String),
}

impl MarketError {
    /// True for a refusal that says "not now" rather than "never": the
    /// call had no effect, and the same call may succeed later (`start_task`
    /// while Lane 0 work is open; `submit_result` while the chain-wide list
    /// of results waiting for verification is full; a list of open or
    /// assigned tasks that is full).
    pub fn can_pass(self) -> bool {
        matches!(
            self,
            MarketError::Lane0Priority
                | MarketError::TooManyPendingVerifications
                | MarketError::TooManyPendingTasks
                | MarketError::TooManyAssignedLane1Tasks
        )
    }
}

impl DispatchError {
    /// A task-market module error.
    pub fn market(error: MarketError) -> Self {
        DispatchError::Module {
            pallet: PALLET.to_owned(),
            error: error.name().to_owned(),
        }
    }

    /// The task-market error, if this is one.
    pub fn market_error(&self) -> Option<MarketError> {
        match self {
            DispatchError::Module { pallet, error } if pallet == PALLET => error.parse().ok(),
            _ => None,
        }
    }
}

impl From<MarketError> for DispatchError {
    fn from(e: MarketError) -> Self {
        DispatchError::market(e)
    }
}

/// Why a transaction was not accepted into a block at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTransaction {
    /// Its nonce was used already.
    #[error("nonce {nonce} is stale (account is at {expected})")]
    Stale {
        /// The nonce sent.
        nonce: u64,
        /// The account's next nonce.
        expected: u64,
    },
    /// Another transaction with this nonce is in the pool already.
    #[error("a transaction with nonce {nonce} is already in the pool (priority too low)")]
    PriorityTooLow {
        /// The nonce sent.
        nonce: u64,
    },
    /// Its arguments do not decode into the call's types (for example a
    /// bounded vector over its bound).
    #[error("call does not decode: {0}")]
    BadCall(String),
    /// The pool holds too many transactions.
    #[error("transaction pool is full")]
    PoolFull,
    /// The signer cannot pay for it.
    #[error("signer cannot pay the fee")]
    Payment,
    /// Any other reason, as the chain described it.
    #[error("{0}")]
    Other(String),
}

/// Why a submission did not produce an [`Inclusion`](super::Inclusion).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// Included, but its dispatch failed.
    #[error("{call} failed in block #{}: {error}", block.number)]
    Dispatch {
        /// The call's name.
        call: &'static str,
        /// The dispatch error.
        error: DispatchError,
        /// The block it was included in.
        block: BlockRef,
    },
    /// Rejected before inclusion.
    #[error("{call} was rejected: {reason}")]
    Invalid {
        /// The call's name.
        call: &'static str,
        /// Why.
        reason: InvalidTransaction,
    },
    /// The transaction left the pool without being included.
    #[error("{call} was dropped from the pool")]
    Dropped {
        /// The call's name.
        call: &'static str,
    },
    /// The chain could not be reached.
    #[error("chain connection failed: {0}")]
    Connection(ConnectionError),
    /// The chain (or submitter) has shut down.
    #[error("chain has shut down")]
    Closed,
    /// Another process signs with this node's key (it used nonce `nonce`):
    /// nothing more is signed here until the node is restarted.
    #[error("another process signs with this key (it used nonce {nonce}); not signing")]
    ForeignSigner {
        /// The nonce the other process used.
        nonce: u64,
    },
}

impl SubmitError {
    /// The task-market error behind a dispatch failure, if that is what this is.
    pub fn market_error(&self) -> Option<MarketError> {
        match self {
            SubmitError::Dispatch { error, .. } => error.market_error(),
            _ => None,
        }
    }
}

/// Why the chain could not be reached. Every kind passes: the node waits
/// and tries again. The words in it are the transport's, for the operator;
/// the node decides by the kind alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The connection broke or could not be made (the transport's words).
    #[error("{0}")]
    Transport(String),
    /// No answer within the time given.
    #[error("no answer from {url} within {after:?}")]
    NoAnswer {
        /// Whom the node asked.
        url: String,
        /// How long it waited.
        after: std::time::Duration,
    },
    /// The node's answer lacks what every node has (a best block, its
    /// header, a block it announced).
    #[error("the node's answer lacks {0}")]
    Missing(String),
    /// The pool answered a submission with words that name no transaction
    /// error the node knows: taken as passing.
    #[error("{call}: the pool said {message:?}")]
    PoolAnswer {
        /// The call's name.
        call: &'static str,
        /// What the pool said.
        message: String,
    },
}

impl ConnectionError {
    /// A transport failure, from its error.
    pub fn transport(error: impl std::fmt::Display) -> Self {
        ConnectionError::Transport(error.to_string())
    }
}

impl From<&str> for ConnectionError {
    fn from(words: &str) -> Self {
        ConnectionError::Transport(words.to_owned())
    }
}

/// Why a chain read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The chain does not know this block.
    #[error("unknown block {0}")]
    UnknownBlock(BlockHash),
    /// Data from the chain did not decode.
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The chain could not be reached.
    #[error("chain connection failed: {0}")]
    Connection(ConnectionError),
    /// The chain has shut down.
    #[error("chain has shut down")]
    Closed,
    /// The node's RPC interface cannot serve what this backend needs (not
    /// passing: another backend, or another node, is needed).
    #[error("the node cannot serve this backend: {0}")]
    Unsupported(String),
    /// The node no longer holds the state of block `block` (it prunes old
    /// state: a full node keeps 256 blocks by default), so that block's
    /// events cannot be read from it; an archive node could serve them.
    #[error("the node has pruned the state of block #{block}")]
    Pruned {
        /// The block asked for.
        block: BlockNumber,
    },
}
