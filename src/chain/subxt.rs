//! The real-chain backend over subxt — work in progress, behind the
//! `real-chain` feature. What is here: a connection over the legacy RPC
//! backend (which works against chopsticks; the default backend does not) and
//! the storage reads of the chain port. Not yet: the finalized-block stream
//! with event decoding, the nonce-owning submitter, reconnection and backfill.

use parity_scale_codec::Decode;
use subxt::backend::LegacyBackend;
use subxt::rpcs::RpcClient;
use subxt::utils::H256;
use subxt::{OnlineClient, PolkadotConfig};

use subxt::dynamic::Value;

use crate::chain::{BlockHash, BlockRef, ChainError, MarketCall, PALLET, SubmitError, TaskIntent};
use crate::task::TaskId;

/// A connection to a Substrate node running the task market.
#[derive(Clone, Debug)]
pub struct SubxtChain {
    api: OnlineClient<PolkadotConfig>,
}

fn conn(e: impl std::fmt::Display) -> ChainError {
    ChainError::Connection(e.to_string())
}

impl SubxtChain {
    /// Connects to `url` (`ws://` is allowed: local test nodes) over the
    /// legacy RPC methods.
    pub async fn connect(url: &str) -> Result<Self, ChainError> {
        let rpc = RpcClient::from_insecure_url(url).await.map_err(conn)?;
        let backend = LegacyBackend::<PolkadotConfig>::builder().build(rpc);
        let api = OnlineClient::from_backend(std::sync::Arc::new(backend))
            .await
            .map_err(conn)?;
        Ok(SubxtChain { api })
    }

    /// The latest finalized block.
    pub async fn finalized_head(&self) -> Result<BlockRef, ChainError> {
        let at = self.api.at_current_block().await.map_err(conn)?;
        Ok(BlockRef {
            number: u32::try_from(at.block_number()).map_err(|e| ChainError::Decode {
                what: "block number".into(),
                reason: e.to_string(),
            })?,
            hash: BlockHash(at.block_hash().0),
        })
    }

    /// `Tasks(id)` at a block, decoded into the crate's [`TaskIntent`].
    pub async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        let block = self.api.at_block(H256(at.0)).await.map_err(conn)?;
        let addr = subxt::dynamic::storage::<(u64,), scale_value_passthrough::Raw>(PALLET, "Tasks");
        let value = block
            .storage()
            .try_fetch(addr, (id.0,))
            .await
            .map_err(conn)?;
        match value {
            None => Ok(None),
            Some(v) => {
                TaskIntent::decode(&mut v.bytes())
                    .map(Some)
                    .map_err(|e| ChainError::Decode {
                        what: format!("Tasks({id})"),
                        reason: e.to_string(),
                    })
            }
        }
    }
}

impl SubxtChain {
    /// Signs `call` with `signer`, submits it with default parameters (the
    /// chain's next nonce, immortal) and waits until it is finalized and
    /// dispatched. Returns its block. The nonce-owning pipelined submitter of
    /// the chain port is still to be written.
    pub async fn submit_signed(
        &self,
        signer: &subxt_signer::sr25519::Keypair,
        call: &MarketCall,
    ) -> Result<BlockHash, SubmitError> {
        let name = call.name();
        let payload = subxt::dynamic::tx(PALLET, name, call_fields(call));
        let mut txs = self
            .api
            .tx()
            .await
            .map_err(|e| SubmitError::Connection(e.to_string()))?;
        let progress = txs
            .sign_and_submit_then_watch_default(&payload, signer)
            .await
            .map_err(|e| SubmitError::Connection(e.to_string()))?;
        let in_block = progress
            .wait_for_finalized()
            .await
            .map_err(|e| SubmitError::Connection(e.to_string()))?;
        let hash = BlockHash(in_block.block_hash().0);
        in_block
            .wait_for_success()
            .await
            .map_err(|e| SubmitError::Connection(format!("{name} failed: {e}")))?;
        Ok(hash)
    }
}

/// The call's arguments as dynamic values, in the pallet's order.
fn call_fields(call: &MarketCall) -> Vec<Value> {
    let variant = |name: &str| Value::unnamed_variant(name, Vec::<Value>::new());
    let id = |t: &TaskId| Value::u128(u128::from(t.0));
    let opt = |b: &Option<Vec<u8>>| match b {
        Some(b) => Value::unnamed_variant("Some", [Value::from_bytes(b)]),
        None => variant("None"),
    };
    match call {
        MarketCall::CreateTaskIntent {
            lane,
            priority,
            model_requirements,
            input_cid,
            compute_budget,
            deadline_blocks,
            escrow_amount,
        } => vec![
            variant(&format!("{lane:?}")),
            variant(&format!("{priority:?}")),
            Value::from_bytes(model_requirements),
            Value::from_bytes(input_cid),
            Value::u128(u128::from(*compute_budget)),
            Value::u128(u128::from(*deadline_blocks)),
            Value::u128(*escrow_amount),
        ],
        MarketCall::AcceptAssignment { task_id }
        | MarketCall::StartTask { task_id }
        | MarketCall::FinalizeTask { task_id } => vec![id(task_id)],
        MarketCall::SubmitResult {
            task_id,
            output_cid,
            attestation_cid,
        } => vec![
            id(task_id),
            Value::from_bytes(output_cid),
            opt(attestation_cid),
        ],
        MarketCall::FailTask { task_id, reason } => {
            vec![id(task_id), variant(&format!("{reason:?}"))]
        }
        MarketCall::RegisterRenderer {
            renderer_id,
            lane,
            deterministic,
            max_latency_ms,
            vram_required_mb,
        } => vec![
            Value::from_bytes(renderer_id),
            variant(&format!("{lane:?}")),
            Value::bool(*deterministic),
            Value::u128(u128::from(*max_latency_ms)),
            Value::u128(u128::from(*vram_required_mb)),
        ],
        MarketCall::DeregisterRenderer { renderer_id } => vec![Value::from_bytes(renderer_id)],
        MarketCall::SubmitAttestation {
            task_id,
            score,
            attestation_cid,
        } => vec![
            id(task_id),
            Value::u128(u128::from(*score)),
            opt(attestation_cid),
        ],
    }
}

/// A value type that decodes anything (the bytes are taken raw).
mod scale_value_passthrough {
    /// Any storage value; read its bytes with `StorageValue::bytes`.
    pub type Raw = subxt::dynamic::Value;
}
