//! # nsn-lane1
//!
//! The Lane 1 side of a Neural Sovereign Network node: task-market events on a
//! Substrate chain become model executions on the node's gRPC sidecar, and
//! their results go back on chain.
//!
//! The crate is built as a Tower middleware stack: execution (the sidecar)
//! and submission (the chain) are `tower::Service`s wrapped in composable
//! [layers](layer), and the [executor] is a thin event loop that sends each
//! task through the stacked [lifecycle] service.
//!
//! ```text
//!  chain ── finalized blocks ──▶ listener ──TaskEvent──▶ executor loop ──Task──▶ stack
//!                                (ours? Lane 0?)        (scheduler)          metrics → limit →
//!                                                                            preempt → lifecycle
//!                                                 execute stack: timeout → retry → sidecar client
//!                                                 submit stack:  retry → status guard → submitter
//! ```
//!
//! Modules, from the vocabulary up:
//!
//! - [`task`]: the market's domain types and the validated newtypes
//!   [`task::ModelId`] and [`task::Cid`]; it imports nothing of the crate;
//! - [`scheduler`]: lane-separated priority queues, Lane 0 first, O(log n);
//! - [`chain`]: the chain port (blocks, events, calls, errors, storage
//!   values, the [`chain::ChainPort`] trait and a submitter
//!   `tower::Service`), [`chain::dev`] (the embedded dev chain) and, with the
//!   `real-chain` feature, the subxt backend;
//! - [`sidecar`]: the gRPC client (`Execute` service) and the reference
//!   sidecar;
//! - [`layer`]: the Tower layers, generic over small traits, knowing no
//!   chain, sidecar or telemetry;
//! - [`stack`]: the composition root — layers and parts put together, and
//!   the default error classifier;
//! - [`lifecycle`], [`submitter`], [`listener`], [`executor`], [`node`]: one
//!   task's stages, the guarded chain calls, chain events in, the loop, and
//!   the wiring of a whole node;
//! - [`dev`], [`config`], [`telemetry`], [`checkpoint`], [`error`]: what the
//!   binary is made of.
//!
//! ```
//! use nsn_lane1::scheduler::Scheduler;
//! use nsn_lane1::task::{Cid, Lane, ModelId, Priority, Task, TaskId, AccountId, UNIT};
//!
//! let mut queue: Scheduler<Task> = Scheduler::new(1_000);
//! queue
//!     .enqueue(Task {
//!         id: TaskId(7),
//!         lane: Lane::Lane1,
//!         priority: Priority::High,
//!         model: ModelId::new("sha256").unwrap(),
//!         input_cid: Cid::parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy").unwrap(),
//!         deadline: 100,
//!         compute_budget: 1_000,
//!         escrow: UNIT,
//!         requester: AccountId::ALICE,
//!     })
//!     .unwrap();
//! assert_eq!(queue.next_task().unwrap().id, TaskId(7));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod admission;
pub mod board;
pub mod breaker;
pub mod chain;
pub mod checkpoint;
pub mod config;
pub mod confirm;
#[cfg(feature = "dev")]
pub mod dev;
pub mod error;
pub mod executor;
pub mod handles;
pub mod layer;
pub mod lifecycle;
pub mod listener;
pub mod node;
pub mod scheduler;
pub mod sidecar;
pub mod signer;
pub mod stack;
pub mod submitter;
pub mod task;
pub mod telemetry;

pub use board::{ExecutorState, TaskBoard, TaskOutcome};
pub use error::{Lane1Error, ListenerError, SidecarError, SubmissionError};
pub use executor::{Executor, ExecutorConfig, ExecutorReport};
pub use layer::Lane1ServiceBuilderExt;
pub use lifecycle::Lifecycle;
pub use listener::{ChainListener, TaskEvent};
pub use sidecar::client::{ExecutionResult, TaskProgress};
pub use stack::build_stack;
pub use submitter::MarketCalls;
