//! Validated content ids.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::MAX_CID_LEN;

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
