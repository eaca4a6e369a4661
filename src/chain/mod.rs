//! The chain port: what the executor needs from a chain, and the types it
//! speaks in. Two backends implement it: the embedded [`dev`] chain (an
//! in-process implementation of the task-market pallet) and the real-chain
//! backend over subxt. Generic code takes a [`ChainPort`] for reads and a
//! submitter — a `tower::Service<MarketCall>` bound to one account, which owns
//! that account's nonce — for writes.
//!
//! The types here mirror the pallet's SCALE layout (see `TASK_MARKET.md`):
//! [`TaskIntent`] decodes from `Tasks(id)` storage bytes, and [`MarketCall`]
//! encodes to the pallet's call bytes (variant index = call index).
//!
//! ```
//! use nsn_lane1::chain::{MarketCall, MarketError};
//! use nsn_lane1::task::{FailReason, TaskId};
//! use parity_scale_codec::Encode;
//!
//! let call = MarketCall::FailTask { task_id: TaskId(7), reason: FailReason::Preempted };
//! assert_eq!(call.name(), "fail_task");
//! assert_eq!(call.encode(), vec![4, 7, 0, 0, 0, 0, 0, 0, 0, 3]);
//! assert_eq!("NotExecutor".parse::<MarketError>().unwrap(), MarketError::NotExecutor);
//! ```

#[cfg(feature = "dev")]
pub mod dev;
#[cfg(feature = "real-chain")]
pub mod subxt;

/// The pallet's name in the runtime.
pub const PALLET: &str = "NsnTaskMarket";

/// The pallet's index in the NSN runtime (and in the in-repo dev runtime).
pub const PALLET_INDEX: u8 = 56;
mod block;
mod call;
mod error;
mod event;
mod port;
mod storage;

pub use block::{Block, BlockHash, BlockRef};
pub use call::{Inclusion, InclusionResult, MarketCall, Pooled, SubmitExt};
pub use error::{
    ChainError, ConnectionError, DispatchError, InvalidTransaction, MarketError, SubmitError,
    UnknownMarketError,
};
pub use event::{EventRecord, MarketEvent, Phase, created_task_id};
pub use port::{BlockStream, ChainPort};
pub use storage::TaskIntent;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{AccountId, FailReason, Lane, Priority, TaskId, TaskStatus};
    use parity_scale_codec::{Decode, Encode};

    #[test]
    fn call_indices_follow_the_pallet() {
        let calls = [
            MarketCall::CreateTaskIntent {
                lane: Lane::Lane1,
                priority: Priority::Normal,
                model_requirements: vec![],
                input_cid: vec![],
                compute_budget: 0,
                deadline_blocks: 1,
                escrow_amount: 0,
            },
            MarketCall::AcceptAssignment { task_id: TaskId(1) },
            MarketCall::StartTask { task_id: TaskId(1) },
            MarketCall::SubmitResult {
                task_id: TaskId(1),
                output_cid: vec![],
                attestation_cid: None,
            },
            MarketCall::FailTask {
                task_id: TaskId(1),
                reason: FailReason::Other,
            },
            MarketCall::RegisterRenderer {
                renderer_id: vec![],
                lane: Lane::Lane0,
                deterministic: true,
                max_latency_ms: 0,
                vram_required_mb: 0,
            },
            MarketCall::DeregisterRenderer {
                renderer_id: vec![],
            },
            MarketCall::SubmitAttestation {
                task_id: TaskId(1),
                score: 0,
                attestation_cid: None,
            },
            MarketCall::FinalizeTask { task_id: TaskId(1) },
        ];
        for (i, call) in calls.iter().enumerate() {
            let bytes = call.encode();
            assert_eq!(bytes[0], i as u8, "{}", call.name());
            assert_eq!(&MarketCall::decode(&mut &bytes[..]).unwrap(), call);
        }
    }

    #[test]
    fn task_intent_layout_is_the_pallets() {
        let t = TaskIntent {
            id: TaskId(0x0102),
            lane: Lane::Lane1,
            priority: Priority::High,
            requester: AccountId([9; 32]),
            executor: None,
            status: TaskStatus::Open,
            escrow: 5,
            created_at: 3,
            deadline: 4,
            model_requirements: b"m".to_vec(),
            input_cid: b"c".to_vec(),
            compute_budget: 6,
            output_cid: None,
            attestation_cid: None,
        };
        let mut want = vec![2, 1, 0, 0, 0, 0, 0, 0, 1, 0];
        want.extend([9; 32]);
        want.extend([0, 0]);
        want.extend(5u128.to_le_bytes());
        want.extend(3u32.to_le_bytes());
        want.extend(4u32.to_le_bytes());
        want.extend([4, b'm', 4, b'c']);
        want.extend(6u64.to_le_bytes());
        want.extend([0, 0]);
        assert_eq!(t.encode(), want);
        assert_eq!(TaskIntent::decode(&mut &want[..]).unwrap(), t);
    }

    #[test]
    fn market_error_names_round_trip() {
        assert_eq!(MarketError::ALL.len(), 35);
        for e in MarketError::ALL {
            assert_eq!(e.name().parse::<MarketError>().unwrap(), *e);
            let d = DispatchError::market(*e);
            assert_eq!(d.market_error(), Some(*e));
            assert_eq!(d.to_string(), format!("NsnTaskMarket::{}", e.name()));
        }
        assert!("Nope".parse::<MarketError>().is_err());
        let other = DispatchError::Module {
            pallet: "Balances".into(),
            error: "NotExecutor".into(),
        };
        assert_eq!(
            other.market_error(),
            None,
            "another pallet's error is not ours"
        );
    }
}
