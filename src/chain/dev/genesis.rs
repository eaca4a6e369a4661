//! The dev chain's genesis: balances, executors, validators, renderers.

use super::pallet::{GenesisError, Market, MarketParams, RendererInfo};
use crate::task::{AccountId, Balance, Lane, UNIT};

/// The dev chain's genesis: balances, executors, validators, renderers.
#[derive(Clone, Debug)]
pub struct DevGenesis {
    /// The pallet's constants.
    pub params: MarketParams,
    /// Where the treasury share and slashes go.
    pub treasury: AccountId,
    /// Accounts and their free balances.
    pub endowed: Vec<(AccountId, Balance)>,
    /// Executors: account, stake (reserved from its balance), lanes served.
    pub executors: Vec<(AccountId, Balance, Vec<Lane>)>,
    /// Validators.
    pub validators: Vec<AccountId>,
    /// Renderers (models) registered at genesis.
    pub renderers: Vec<(String, RendererInfo)>,
}

/// The treasury account on Substrate chains (`modlpy/trsry` padded with zeros).
pub const TREASURY: AccountId = {
    let mut id = [0u8; 32];
    let tag = *b"modlpy/trsry";
    let mut i = 0;
    while i < tag.len() {
        id[i] = tag[i];
        i += 1;
    }
    AccountId(id)
};

/// The Lane 1 models registered by [`DevGenesis::development`]: those of the
/// reference sidecar.
pub const DEV_LANE1_MODELS: &[&str] =
    &["noop", "sha256", "uppercase", "sleep", "fail", "mandelbrot"];

/// The Lane 0 model registered by [`DevGenesis::development`].
pub const DEV_LANE0_MODEL: &str = "video-render";

impl DevGenesis {
    /// The development preset: Alice requests (and is sudo), Bob executes
    /// both lanes with 100 UNIT of stake, Dave and Eve validate; every dev
    /// account holds 1,000,000 UNIT; the reference sidecar's models are
    /// registered.
    pub fn development() -> Self {
        let accounts = [
            AccountId::ALICE,
            AccountId::BOB,
            AccountId::CHARLIE,
            AccountId::DAVE,
            AccountId::EVE,
            AccountId::FERDIE,
        ];
        let mut renderers: Vec<(String, RendererInfo)> = DEV_LANE1_MODELS
            .iter()
            .map(|m| {
                (
                    (*m).to_owned(),
                    RendererInfo {
                        lane: Lane::Lane1,
                        deterministic: true,
                        max_latency_ms: 60_000,
                        vram_required_mb: 0,
                        registered_at: 0,
                    },
                )
            })
            .collect();
        renderers.push((
            DEV_LANE0_MODEL.to_owned(),
            RendererInfo {
                lane: Lane::Lane0,
                deterministic: true,
                max_latency_ms: 10_000,
                vram_required_mb: 8_000,
                registered_at: 0,
            },
        ));
        DevGenesis {
            params: MarketParams::default(),
            treasury: TREASURY,
            endowed: accounts.iter().map(|a| (*a, 1_000_000 * UNIT)).collect(),
            executors: vec![(AccountId::BOB, 100 * UNIT, vec![Lane::Lane0, Lane::Lane1])],
            validators: vec![AccountId::DAVE, AccountId::EVE],
            renderers,
        }
    }

    pub(super) fn build(&self) -> Result<Market, GenesisError> {
        let mut m = Market::new(self.params.clone(), self.treasury)?;
        for (who, amount) in &self.endowed {
            m.endow(*who, *amount)?;
        }
        for (who, stake, lanes) in &self.executors {
            m.add_executor(*who, *stake, lanes.clone())?;
        }
        for v in &self.validators {
            m.add_validator(*v);
        }
        for (id, info) in &self.renderers {
            m.add_renderer(id.as_bytes(), info.clone())?;
        }
        Ok(m)
    }
}
