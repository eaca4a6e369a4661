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

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};

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

/// The chain's task id. The scheduler and the executor key everything by it
/// and never invent ids of their own.
///
/// It is written in decimal wherever it leaves the process (the sidecar's
/// `task_id` field is the chain id in decimal).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, MaxEncodedLen,
)]
pub struct TaskId(pub u64);

impl TaskId {
    /// The raw chain id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for TaskId {
    fn from(id: u64) -> Self {
        TaskId(id)
    }
}

impl FromStr for TaskId {
    type Err = TaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Decimal digits only: `u64::from_str` would also take a leading '+'.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TaskIdError {
                input: s.to_owned(),
            });
        }
        s.parse::<u64>().map(TaskId).map_err(|_| TaskIdError {
            input: s.to_owned(),
        })
    }
}

/// A string that is not a task id (decimal `u64`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a task id (expected a decimal number that fits in u64)")]
pub struct TaskIdError {
    input: String,
}

/// The chain's two lanes. Lane 0 (latency-critical video generation) always
/// wins the GPU over Lane 1 (general AI compute).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, MaxEncodedLen,
)]
pub enum Lane {
    /// Latency-critical video generation: deterministic renderers, attestation required.
    Lane0,
    /// General AI compute.
    Lane1,
}

impl Lane {
    /// Both lanes, in scheduling order.
    pub const ALL: [Lane; 2] = [Lane::Lane0, Lane::Lane1];

    /// The lane as the sidecar's `lane` field (0 or 1).
    pub const fn index(self) -> u32 {
        match self {
            Lane::Lane0 => 0,
            Lane::Lane1 => 1,
        }
    }

    /// The lane from the sidecar's `lane` field.
    pub fn from_index(index: u32) -> Result<Self, InvalidEnum> {
        match index {
            0 => Ok(Lane::Lane0),
            1 => Ok(Lane::Lane1),
            other => Err(InvalidEnum::new("lane", other.to_string(), "0 or 1")),
        }
    }

    /// The name used by the sidecar's `ListPlugins` (`"lane0"`, `"lane1"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Lane::Lane0 => "lane0",
            Lane::Lane1 => "lane1",
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lane {
    type Err = InvalidEnum;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lane0" | "0" => Ok(Lane::Lane0),
            "lane1" | "1" => Ok(Lane::Lane1),
            _ => Err(InvalidEnum::new("lane", s, "lane0 or lane1")),
        }
    }
}

/// A task's priority within its lane. The chain weighs them 2, 1, 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, MaxEncodedLen)]
pub enum Priority {
    /// Weight 2: runs first.
    High,
    /// Weight 1.
    Normal,
    /// Weight 0: runs last.
    Low,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The chain's weight of this priority (High 2, Normal 1, Low 0).
    pub const fn weight(self) -> u8 {
        match self {
            Priority::High => 2,
            Priority::Normal => 1,
            Priority::Low => 0,
        }
    }

    /// Lower-case name, as used in config and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = InvalidEnum;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(InvalidEnum::new("priority", s, "high, normal or low")),
        }
    }
}

/// A task's status on chain (`TaskStatus` in the pallet, same variant order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, MaxEncodedLen)]
pub enum TaskStatus {
    /// Created, escrow reserved, waiting for an executor.
    Open,
    /// An executor was picked; it may start the task.
    Assigned,
    /// The executor called `start_task`.
    Executing,
    /// Completed (reserved by the pallet's type; not reached by its calls).
    Completed,
    /// Failed with a `FailReason`; escrow returned.
    Failed,
    /// Open past its deadline; escrow returned.
    Expired,
    /// A result was submitted; waiting for attestations.
    Submitted,
    /// At least one attestation arrived; waiting for the quorum.
    PendingVerification,
    /// Quorum reached with a passing score; executor paid.
    Verified,
    /// Quorum reached with a failing score, or the verification window ended.
    Rejected,
}

impl TaskStatus {
    /// True when no call can change the task any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Expired
                | TaskStatus::Verified
                | TaskStatus::Rejected
        )
    }

    /// True while the assigned executor may still work on the task
    /// (`Assigned` or `Executing`).
    pub const fn is_in_hand(self) -> bool {
        matches!(self, TaskStatus::Assigned | TaskStatus::Executing)
    }

    /// True once a result is on chain (`Submitted` or later on the success path).
    pub const fn has_result(self) -> bool {
        matches!(
            self,
            TaskStatus::Submitted
                | TaskStatus::PendingVerification
                | TaskStatus::Verified
                | TaskStatus::Rejected
                | TaskStatus::Completed
        )
    }
}

/// Why a task failed (`FailReason` in the pallet, same variant order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode, MaxEncodedLen)]
pub enum FailReason {
    /// The executor could not run the task (slashes the executor).
    ExecutorFailed,
    /// Cancelled by the requester.
    Cancelled,
    /// The task ran past its deadline.
    DeadlineExceeded,
    /// Lane 0 work took the GPU (slashes the executor when the executor reports it).
    Preempted,
    /// The task's input was unusable.
    InvalidInput,
    /// Anything else.
    Other,
}

impl FailReason {
    /// True for the reasons the pallet slashes the executor for.
    pub const fn slashes_executor(self) -> bool {
        matches!(self, FailReason::ExecutorFailed | FailReason::Preempted)
    }

    /// Snake-case name, as used in metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailReason::ExecutorFailed => "executor_failed",
            FailReason::Cancelled => "cancelled",
            FailReason::DeadlineExceeded => "deadline_exceeded",
            FailReason::Preempted => "preempted",
            FailReason::InvalidInput => "invalid_input",
            FailReason::Other => "other",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct InvalidEnum {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl InvalidEnum {
    fn new(what: &'static str, value: impl Into<String>, expected: &'static str) -> Self {
        InvalidEnum {
            what,
            value: value.into(),
            expected,
        }
    }
}

/// A 32-byte account id (`AccountId32`, an sr25519 public key on NSN).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, MaxEncodedLen)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `//Alice`'s public key on every Substrate dev chain.
    pub const ALICE: AccountId = AccountId(hex32(
        "d43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d",
    ));
    /// `//Bob`'s public key on every Substrate dev chain.
    pub const BOB: AccountId = AccountId(hex32(
        "8eaf04151687736326c9fea17e25fc5287613693c912909cb226aa4794f26a48",
    ));
    /// `//Charlie`'s public key on every Substrate dev chain.
    pub const CHARLIE: AccountId = AccountId(hex32(
        "90b5ab205c6974c9ea841be688864633dc9ca8a357843eeacf2314649965fe22",
    ));
    /// `//Dave`'s public key on every Substrate dev chain.
    pub const DAVE: AccountId = AccountId(hex32(
        "306721211d5404bd9da88e0204360a1a9ab8b87c66c1bc2fcdd37f3c2222cc20",
    ));
    /// `//Eve`'s public key on every Substrate dev chain.
    pub const EVE: AccountId = AccountId(hex32(
        "e659a7a1628cdd93febc04a4e0646ea20e9f5f0ce097d9a05290d4a9e054df4e",
    ));
    /// `//Ferdie`'s public key on every Substrate dev chain.
    pub const FERDIE: AccountId = AccountId(hex32(
        "1cbd2d43530a44705ad088af313e18f80b53ef16b36177cd4b77b846f2a5f07c",
    ));
}

/// Decodes 64 hex digits at compile time (for the well-known dev keys).
const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lower-case hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64, "expected 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short form: enough to tell accounts apart in logs.
        write!(f, "AccountId(0x{}…)", hex::encode(&self.0[..4]))
    }
}

impl FromStr for AccountId {
    type Err = AccountIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits, &mut out).map_err(|e| AccountIdError {
            input: s.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(AccountId(out))
    }
}

/// A string that is not a hex account id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an account id (expected 32 bytes of hex): {reason}")]
pub struct AccountIdError {
    input: String,
    reason: String,
}

/// A model id: 1–64 bytes of UTF-8, as the chain's `model_requirements` and
/// renderer ids. Cheap to clone (shared).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelId(Arc<str>);

/// Why a model id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelIdError {
    /// The id is empty.
    #[error("model id is empty")]
    Empty,
    /// The id is longer than the chain allows.
    #[error("model id is {len} bytes long; the chain allows at most {MAX_MODEL_ID_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The bytes are not UTF-8.
    #[error("model id is not UTF-8: {0}")]
    NotUtf8(std::str::Utf8Error),
    /// The id contains a control character.
    #[error("model id contains a control character at byte {at}")]
    ControlCharacter {
        /// Byte offset of the character.
        at: usize,
    },
}

impl ModelId {
    /// Validates a model id.
    pub fn new(id: &str) -> Result<Self, ModelIdError> {
        if id.is_empty() {
            return Err(ModelIdError::Empty);
        }
        if id.len() > MAX_MODEL_ID_LEN {
            return Err(ModelIdError::TooLong { len: id.len() });
        }
        if let Some((at, _)) = id.char_indices().find(|(_, c)| c.is_control()) {
            return Err(ModelIdError::ControlCharacter { at });
        }
        Ok(ModelId(Arc::from(id)))
    }

    /// Validates a model id from chain bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelIdError> {
        if bytes.len() > MAX_MODEL_ID_LEN {
            return Err(ModelIdError::TooLong { len: bytes.len() });
        }
        let s = std::str::from_utf8(bytes).map_err(ModelIdError::NotUtf8)?;
        ModelId::new(s)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as chain bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelId({:?})", &*self.0)
    }
}

impl FromStr for ModelId {
    type Err = ModelIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelId::new(s)
    }
}

/// A content id (CID v0 or v1), held in its text form (what the chain stores
/// and the sidecar takes), at most 128 bytes. Parsing checks it is a real CID:
/// a known multibase, a CID version, a codec and a well-formed multihash.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cid(Arc<str>);

/// Why a CID was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The CID is empty.
    #[error("CID is empty")]
    Empty,
    /// The CID is longer than the chain allows.
    #[error("CID is {len} bytes long; the chain allows at most {MAX_CID_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The text is not a CID.
    #[error("{input:?} is not a valid CID: {reason}")]
    Invalid {
        /// The rejected text (cut to 64 characters).
        input: String,
        /// What the parser objected to.
        reason: String,
    },
    /// Chain bytes that are neither a text CID nor a binary one.
    #[error("CID bytes are neither a text CID nor a binary CID: {reason}")]
    InvalidBytes {
        /// What the parser objected to.
        reason: String,
    },
}

impl Cid {
    /// Parses and validates a CID in text form (`Qm…` or a multibase CIDv1 such as `bafk…`).
    pub fn parse(text: &str) -> Result<Self, CidError> {
        if text.is_empty() {
            return Err(CidError::Empty);
        }
        if text.len() > MAX_CID_LEN {
            return Err(CidError::TooLong { len: text.len() });
        }
        match cid::Cid::try_from(text) {
            Ok(_) => Ok(Cid(Arc::from(text))),
            Err(e) => Err(CidError::Invalid {
                input: text.chars().take(64).collect(),
                reason: e.to_string(),
            }),
        }
    }

    /// Validates a CID as the chain stores it: its text form as UTF-8 bytes,
    /// or (from other writers) its binary form, which is turned into text.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CidError> {
        if bytes.is_empty() {
            return Err(CidError::Empty);
        }
        if bytes.len() > MAX_CID_LEN {
            return Err(CidError::TooLong { len: bytes.len() });
        }
        if let Some(cid) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| Cid::parse(text).ok())
        {
            return Ok(cid);
        }
        match cid::Cid::try_from(bytes) {
            Ok(parsed) => Cid::parse(&parsed.to_string()),
            Err(e) => Err(CidError::InvalidBytes {
                reason: e.to_string(),
            }),
        }
    }

    /// Builds the CIDv1 (raw codec) of a sha2-256 digest, in base32 text.
    pub fn from_sha256_raw(digest: [u8; 32]) -> Self {
        const RAW: u64 = 0x55;
        const SHA2_256: u64 = 0x12;
        // A 32-byte digest always fits a 64-byte multihash.
        let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256, &digest)
            .expect("32-byte digest fits a 64-byte multihash");
        Cid(Arc::from(cid::Cid::new_v1(RAW, mh).to_string()))
    }

    /// The CID's text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The CID as chain bytes (its text form).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The parsed CID (version, codec, multihash).
    pub fn parsed(&self) -> cid::Cid {
        // Every `Cid` was checked by `cid::Cid::try_from` when it was made.
        cid::Cid::try_from(&*self.0).expect("validated at construction")
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({})", &*self.0)
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cid::parse(s)
    }
}

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
        assert_eq!(Cid::parse(V1).unwrap().parsed().version(), cid::Version::V1);
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
        let binary = cid::Cid::try_from(V1).unwrap().to_bytes();
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
