//! Ids: the chain's task ids and account ids.

use std::fmt;
use std::str::FromStr;

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};

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

/// One run attempt of a task at the sidecar. Sidecars keep task ids for
/// good (NSN's refuses a known id with `ALREADY_EXISTS` whatever the first
/// run's end), so every attempt goes out under an id of its own: the chain
/// task id in decimal for the first (`17`), with the attempt after a dash
/// for later ones (`17-1`, `17-2`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId {
    /// The chain task.
    pub task: TaskId,
    /// The attempt, from 0.
    pub attempt: u32,
}

impl RunId {
    /// The first attempt of `task`.
    pub const fn first(task: TaskId) -> Self {
        RunId { task, attempt: 0 }
    }

    /// The attempt after this one.
    pub const fn next(self) -> Self {
        RunId {
            task: self.task,
            attempt: self.attempt.saturating_add(1),
        }
    }
}

impl From<TaskId> for RunId {
    fn from(task: TaskId) -> Self {
        RunId::first(task)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.attempt {
            0 => write!(f, "{}", self.task),
            n => write!(f, "{}-{n}", self.task),
        }
    }
}

impl FromStr for RunId {
    type Err = TaskIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TaskIdError {
            input: s.to_owned(),
        };
        match s.split_once('-') {
            None => Ok(RunId::first(s.parse()?)),
            Some((task, attempt)) => {
                if attempt.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let attempt: u32 = attempt.parse().map_err(|_| bad())?;
                if attempt == 0 {
                    return Err(bad());
                }
                Ok(RunId {
                    task: task.parse().map_err(|_| bad())?,
                    attempt,
                })
            }
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

#[cfg(test)]
mod run_id_tests {
    use super::*;

    #[test]
    fn run_ids_read_back_and_differ_per_attempt() {
        let first = RunId::first(TaskId(17));
        assert_eq!(first.to_string(), "17");
        assert_eq!(first.next().to_string(), "17-1");
        assert_eq!(first.next().next().to_string(), "17-2");
        for run in [first, first.next(), first.next().next()] {
            assert_eq!(run.to_string().parse::<RunId>().unwrap(), run);
        }
        for bad in ["", "17-", "17-0", "-1", "17-x", "x-1", "17-1-2", "+17"] {
            assert!(bad.parse::<RunId>().is_err(), "{bad:?}");
        }
    }
}
