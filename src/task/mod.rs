//! The task market's vocabulary: ids, lanes, priorities, statuses, fail reasons,
//! and the validated newtypes every other module speaks in.
//!
//! The enums have the variants *and the SCALE variant order* of the on-chain
//! `NsnTaskMarket` pallet, so they encode and decode exactly as the chain does:
//!
//! ```
//! use nsn_lane1::task::{FailReason, Lane, Priority, TaskStatus};
//! use parity_scale_codec::{Decode, Encode};
//!
//! assert_eq!(Lane::Lane1.encode(), vec![1]);
//! assert_eq!(Priority::Low.encode(), vec![2]);
//! assert_eq!(TaskStatus::decode(&mut &[6u8][..]).unwrap(), TaskStatus::Submitted);
//! assert_eq!(FailReason::Preempted.encode(), vec![3]);
//! ```
//!
//! Data that comes from outside (chain storage, config, CLI, sidecar) enters
//! through the validating constructors here and gets a typed error that says
//! what was wrong:
//!
//! ```
//! use nsn_lane1::task::{Cid, ModelId};
//!
//! let model = ModelId::new("flux-schnell").unwrap();
//! assert_eq!(model.as_str(), "flux-schnell");
//! assert!(ModelId::new("").is_err());
//!
//! let cid: Cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".parse().unwrap();
//! assert_eq!(cid.as_str().len(), 59);
//! let err = "not-a-cid".parse::<Cid>().unwrap_err();
//! assert!(err.to_string().contains("not a valid CID"));
//! ```

/// A block number on the chain (`u32` in the runtime).
pub type BlockNumber = u32;

/// A balance on the chain (`u128` in the runtime; `UNIT` = 10¹²).
pub type Balance = u128;

/// One unit of the chain's token, in its smallest denomination.
pub const UNIT: Balance = 1_000_000_000_000;

/// Longest model id the chain accepts (`MaxModelIdLen`).
pub const MAX_MODEL_ID_LEN: usize = 64;

/// Longest CID the chain accepts (`MaxCidLen`).
pub const MAX_CID_LEN: usize = 128;
mod cid;
mod id;
mod lane;
mod model;
mod status;

pub use cid::{Cid, CidError};
pub use id::{AccountId, AccountIdError, RunId, TaskId, TaskIdError};
pub use lane::{Lane, Priority};
pub use model::{ModelId, ModelIdError};
pub use status::{FailReason, InvalidEnum, TaskStatus};

/// A Lane 0 or Lane 1 task as the executor works with it: the chain's fields,
/// validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The chain's task id.
    pub id: TaskId,
    /// The task's lane.
    pub lane: Lane,
    /// Its priority within the lane.
    pub priority: Priority,
    /// The model it asks for (`model_requirements`).
    pub model: ModelId,
    /// Where its input is.
    pub input_cid: Cid,
    /// The block after which it is late.
    pub deadline: BlockNumber,
    /// The compute budget the requester set.
    pub compute_budget: u64,
    /// The escrow the requester reserved.
    pub escrow: Balance,
    /// Who asked for it.
    pub requester: AccountId,
}

#[cfg(test)]
mod tests {
    use super::*;
    use parity_scale_codec::{Decode, Encode};

    #[test]
    fn scale_order_matches_the_pallet() {
        let lanes: Vec<u8> = Lane::ALL.iter().flat_map(|l| l.encode()).collect();
        assert_eq!(lanes, vec![0, 1]);
        let prios: Vec<u8> = Priority::ALL.iter().flat_map(|p| p.encode()).collect();
        assert_eq!(prios, vec![0, 1, 2]);
        let statuses = [
            TaskStatus::Open,
            TaskStatus::Assigned,
            TaskStatus::Executing,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Expired,
            TaskStatus::Submitted,
            TaskStatus::PendingVerification,
            TaskStatus::Verified,
            TaskStatus::Rejected,
        ];
        for (i, s) in statuses.iter().enumerate() {
            assert_eq!(s.encode(), vec![i as u8], "{s:?}");
            assert_eq!(TaskStatus::decode(&mut &[i as u8][..]).unwrap(), *s);
        }
        assert!(TaskStatus::decode(&mut &[10u8][..]).is_err());
        let reasons = [
            FailReason::ExecutorFailed,
            FailReason::Cancelled,
            FailReason::DeadlineExceeded,
            FailReason::Preempted,
            FailReason::InvalidInput,
            FailReason::Other,
        ];
        for (i, r) in reasons.iter().enumerate() {
            assert_eq!(r.encode(), vec![i as u8], "{r:?}");
        }
        assert!(FailReason::decode(&mut &[6u8][..]).is_err());
    }

    #[test]
    fn priority_weights() {
        assert_eq!(
            Priority::ALL.map(Priority::weight),
            [2, 1, 0],
            "High, Normal, Low weigh 2, 1, 0"
        );
    }

    #[test]
    fn task_id_is_decimal() {
        assert_eq!(TaskId(42).to_string(), "42");
        assert_eq!("42".parse::<TaskId>().unwrap(), TaskId(42));
        assert_eq!(
            "18446744073709551615".parse::<TaskId>().unwrap(),
            TaskId(u64::MAX)
        );
        for bad in ["", "+1", "-1", "0x10", "1.0", "18446744073709551616", " 1"] {
            assert!(bad.parse::<TaskId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lane_index_round_trips_and_rejects_others() {
        for lane in Lane::ALL {
            assert_eq!(Lane::from_index(lane.index()).unwrap(), lane);
            assert_eq!(lane.as_str().parse::<Lane>().unwrap(), lane);
        }
        let err = Lane::from_index(2).unwrap_err();
        assert_eq!(err.to_string(), "invalid lane \"2\": expected 0 or 1");
        assert!("lane2".parse::<Lane>().is_err());
    }

    #[test]
    fn model_id_bounds() {
        assert!(ModelId::new("a").is_ok());
        assert!(ModelId::new(&"m".repeat(64)).is_ok());
        assert_eq!(
            ModelId::new(&"m".repeat(65)).unwrap_err(),
            ModelIdError::TooLong { len: 65 }
        );
        assert_eq!(ModelId::new("").unwrap_err(), ModelIdError::Empty);
        assert_eq!(
            ModelId::new("ab\ncd").unwrap_err(),
            ModelIdError::ControlCharacter { at: 2 }
        );
        assert!(matches!(
            ModelId::from_bytes(&[0xff, 0xfe]).unwrap_err(),
            ModelIdError::NotUtf8(_)
        ));
        assert_eq!(ModelId::from_bytes(b"echo").unwrap().as_str(), "echo");
    }

    const V1: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    #[test]
    fn cid_accepts_v0_and_v1_text() {
        assert_eq!(Cid::parse(V1).unwrap().as_str(), V1);
        assert_eq!(Cid::parse(V0).unwrap().as_str(), V0);
        assert_eq!(
            Cid::parse(V1).unwrap().parsed().version(),
            ::cid::Version::V1
        );
    }

    #[test]
    fn cid_rejects_garbage_with_reason() {
        assert_eq!(Cid::parse("").unwrap_err(), CidError::Empty);
        let long = "b".repeat(129);
        assert_eq!(
            Cid::parse(&long).unwrap_err(),
            CidError::TooLong { len: 129 }
        );
        for bad in [
            "hello",
            "Qm123",
            "bafy",
            "zzzzzzzz",
            "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52z!",
        ] {
            match Cid::parse(bad) {
                Err(CidError::Invalid { input, reason }) => {
                    assert_eq!(input, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn cid_from_chain_bytes_text_or_binary() {
        assert_eq!(Cid::from_bytes(V1.as_bytes()).unwrap().as_str(), V1);
        let binary = ::cid::Cid::try_from(V1).unwrap().to_bytes();
        assert_eq!(Cid::from_bytes(&binary).unwrap().as_str(), V1);
        assert!(matches!(
            Cid::from_bytes(&[0xff, 0x00, 0x13]).unwrap_err(),
            CidError::InvalidBytes { .. }
        ));
        assert_eq!(Cid::from_bytes(&[]).unwrap_err(), CidError::Empty);
    }

    #[test]
    fn cid_of_sha256_digest_is_v1_raw_base32() {
        let digest = [7u8; 32];
        let cid = Cid::from_sha256_raw(digest);
        let parsed = cid.parsed();
        assert_eq!(parsed.codec(), 0x55);
        assert_eq!(parsed.hash().code(), 0x12);
        assert_eq!(parsed.hash().digest(), &digest);
        assert!(cid.as_str().starts_with("bafkrei"));
    }

    #[test]
    fn account_id_hex_round_trip_and_errors() {
        let s = AccountId::ALICE.to_string();
        assert_eq!(s.parse::<AccountId>().unwrap(), AccountId::ALICE);
        assert!("0x1234".parse::<AccountId>().is_err());
        assert!("zz".repeat(32).parse::<AccountId>().is_err());
        assert_ne!(AccountId::ALICE, AccountId::BOB);
    }
}
