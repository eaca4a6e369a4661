//! Validated model ids.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::MAX_MODEL_ID_LEN;

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
