//! Lanes and priorities, in the pallet's SCALE order.

use std::fmt;
use std::str::FromStr;

use parity_scale_codec::{Decode, Encode, MaxEncodedLen};

use super::InvalidEnum;

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
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, MaxEncodedLen,
)]
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
