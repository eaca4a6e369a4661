//! The real-chain backend over subxt, behind the `real-chain` feature: a
//! reconnecting connection with subxt's default backend (real nodes) or its
//! legacy backend (chopsticks); the [`ChainPort`] — a gap-free
//! finalized-block stream from any block number, with task-market events
//! decoded by pallet and variant into the crate's types, storage reads at a
//! block, the pool-aware next nonce — and [`SubxtSubmitter`], the pipelined
//! submitter that owns an account's nonce.

use parity_scale_codec::DecodeAll;
use subxt::backend::{ArchiveBackend, CombinedBackend, LegacyBackend};
use subxt::rpcs::RpcClient;
use subxt::utils::H256;
use subxt::{OnlineClient, PolkadotConfig};

use subxt::dynamic::Value;

use crate::chain::{
    Block, BlockHash, BlockRef, BlockStream, ChainError, ChainPort, ConnectionError, DispatchError,
    EventRecord, InvalidTransaction, MarketCall, MarketEvent, PALLET, Phase, SubmitError,
    TaskIntent,
};
mod submitter;
pub use submitter::{MAX_OUTSTANDING, SubxtSubmitter};

use crate::task::TaskId;
use crate::task::{AccountId, BlockNumber};

/// A connection to a Substrate node running the task market.
#[derive(Clone)]
pub struct SubxtChain {
    api: OnlineClient<PolkadotConfig>,
    /// Reads at a given block: the same client on the legacy backend; on
    /// the default backend, one that asks the archive methods where the
    /// node has them and the legacy ones otherwise, never `chainHead_v1`,
    /// which serves only the blocks its follow subscription pins (subxt's
    /// combined backend would try it first for every read, and fall back:
    /// a backfill read 41 blocks a second that way against 230).
    history: OnlineClient<PolkadotConfig>,
    rpc: RpcClient,
    url: std::sync::Arc<str>,
    decode_failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for SubxtChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubxtChain")
            .field("genesis", &self.api.genesis_hash())
            .finish()
    }
}

fn conn(e: impl std::fmt::Display) -> ChainError {
    ChainError::Connection(ConnectionError::transport(e))
}

/// A failed read of block `number`: [`ChainError::Pruned`] when the node
/// says it has discarded the block's state, a connection failure otherwise.
/// The node says so only in words ("State already discarded for …", its
/// `UnknownBlock` client error, JSON-RPC code 4003), so its words decide.
fn block_read(number: u32, e: impl std::fmt::Display) -> ChainError {
    let words = e.to_string();
    if words.contains("State already discarded") {
        ChainError::Pruned { block: number }
    } else {
        conn(words)
    }
}

/// Which subxt backend a connection drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// subxt's default backend (the new JSON-RPC interface, falling back to
    /// the legacy methods where a node lacks it): for real nodes.
    #[default]
    Default,
    /// The legacy RPC methods only: for chopsticks, which the default
    /// backend cannot follow.
    Legacy,
}

/// How long [`SubxtChain::connect`] tries to reach the node before it gives
/// up; once connected, a lost connection is re-established without limit.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

impl SubxtChain {
    /// Connects to `url` (`ws://` is allowed: local test nodes) with
    /// `backend`. The connection reconnects by itself with exponential
    /// backoff (100 ms doubling to 5 s); requests made while it is down fail
    /// with [`ChainError::Connection`] and the block stream, which fetches by
    /// number, resumes where it stopped.
    pub async fn connect(url: &str, backend: Backend) -> Result<Self, ChainError> {
        use subxt::rpcs::client::reconnecting_rpc_client::{ExponentialBackoff, RpcClient as Rc};
        let build = Rc::builder()
            .retry_policy(
                ExponentialBackoff::from_millis(100).max_delay(std::time::Duration::from_secs(5)),
            )
            .build(url);
        let client = tokio::time::timeout(CONNECT_TIMEOUT, build)
            .await
            .map_err(|_| {
                ChainError::Connection(ConnectionError::NoAnswer {
                    url: url.to_owned(),
                    after: CONNECT_TIMEOUT,
                })
            })?
            .map_err(conn)?;
        let rpc = RpcClient::new(client);
        let legacy = || LegacyBackend::<PolkadotConfig>::builder().build(rpc.clone());
        let (api, history) = match backend {
            Backend::Legacy => {
                let api = OnlineClient::from_backend(std::sync::Arc::new(legacy()))
                    .await
                    .map_err(conn)?;
                (api.clone(), api)
            }
            Backend::Default => {
                let api = OnlineClient::from_rpc_client(rpc.clone())
                    .await
                    .map_err(conn)?;
                follows_blocks(&api, url).await?;
                // Without chainHead there is nothing for a driver to drive.
                let (reads, _driver) = CombinedBackend::<PolkadotConfig>::builder()
                    .no_default_backends()
                    .with_archive_backend(ArchiveBackend::new(rpc.clone()))
                    .with_legacy_backend(legacy())
                    .build(rpc.clone())
                    .await
                    .map_err(conn)?;
                let history = OnlineClient::from_backend(std::sync::Arc::new(reads))
                    .await
                    .map_err(conn)?;
                (api, history)
            }
        };
        Ok(SubxtChain {
            api,
            history,
            rpc,
            url: url.into(),
            decode_failures: Default::default(),
        })
    }

    /// The subxt client underneath, for reads the chain port does not offer.
    pub fn client(&self) -> &OnlineClient<PolkadotConfig> {
        &self.api
    }

    /// The JSON-RPC client underneath, for node-specific methods (such as a
    /// development node's `dev_newBlock`).
    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// Task-market events that failed to decode so far (each was logged).
    pub fn decode_failures(&self) -> u64 {
        self.decode_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The finalized block `number` with its task-market events, or `None`
    /// if the chain has no such block yet.
    pub async fn block(&self, number: u32) -> Result<Option<Block>, ChainError> {
        let at = match self.history.at_block(u64::from(number)).await {
            Ok(at) => at,
            Err(subxt::error::OnlineClientAtBlockError::BlockNotFound { .. }) => return Ok(None),
            Err(e) => return Err(block_read(number, e)),
        };
        let header = at.block_header().await.map_err(conn)?;
        let events = at
            .events()
            .fetch()
            .await
            .map_err(|e| block_read(number, e))?;
        let mut records = Vec::new();
        let mut failed = 0u32;
        for event in events.iter() {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    self.count_failure(number, &e.to_string());
                    failed += 1;
                    continue;
                }
            };
            if event.pallet_name() != PALLET {
                continue;
            }
            let Some(decoded) = self.market_event(number, &event) else {
                failed += 1;
                continue;
            };
            records.push(EventRecord {
                phase: match event.phase() {
                    subxt::events::Phase::ApplyExtrinsic(i) => Phase::ApplyExtrinsic(i),
                    subxt::events::Phase::Finalization => Phase::Finalization,
                    subxt::events::Phase::Initialization => Phase::Initialization,
                },
                event: decoded,
            });
        }
        if failed > 0 {
            // A block read without some of its events would be a block whose
            // work is skipped: the caller does not go past it.
            return Err(ChainError::Decode {
                what: format!("the events of block {number}"),
                reason: format!("{failed} event(s) failed to decode (logged)"),
            });
        }
        Ok(Some(Block {
            number,
            hash: BlockHash(at.block_hash().0),
            parent_hash: BlockHash(header.parent_hash.0),
            events: records.into(),
        }))
    }

    /// The extrinsics among `wanted` in finalized block `number`, each with
    /// its index and its task-market events or dispatch error.
    /// The watched extrinsics in block `number` of the best chain, with
    /// the hash of the block read.
    async fn inclusions(
        &self,
        number: u32,
        wanted: &std::collections::HashSet<submitter::TxHash>,
    ) -> Result<(BlockHash, Vec<(submitter::TxHash, submitter::Found)>), ChainError> {
        let at = match self.history.at_block(u64::from(number)).await {
            Ok(at) => at,
            Err(subxt::error::OnlineClientAtBlockError::BlockNotFound { .. }) => {
                return Err(ChainError::Connection(ConnectionError::Missing(format!(
                    "finalized block #{number}"
                ))));
            }
            Err(e) => return Err(conn(e)),
        };
        let read = BlockHash(at.block_hash().0);
        let extrinsics = at.extrinsics().fetch().await.map_err(conn)?;
        let mut ours: Vec<(submitter::TxHash, u32)> = Vec::new();
        for ext in extrinsics.iter().flatten() {
            let hash = ext.hash().0;
            if wanted.contains(&hash) {
                ours.push((hash, u32::try_from(ext.index()).unwrap_or(u32::MAX)));
            }
        }
        if ours.is_empty() {
            return Ok((read, Vec::new()));
        }
        let block = BlockRef { number, hash: read };
        let events = at.events().fetch().await.map_err(conn)?;
        let mut results: Vec<Result<Vec<MarketEvent>, DispatchError>> =
            ours.iter().map(|_| Ok(Vec::new())).collect();
        for event in self.decodable(number, &events) {
            let subxt::events::Phase::ApplyExtrinsic(i) = event.phase() else {
                continue;
            };
            let Some(slot) = ours.iter().position(|(_, index)| *index == i) else {
                continue;
            };
            let failed = match (event.pallet_name(), event.event_name()) {
                ("System", "ExtrinsicFailed") => Some(event.field_bytes()),
                // `Sudid { sudo_result: Result<(), DispatchError> }`: the
                // wrapped call's own outcome.
                ("Sudo", "Sudid") => match event.field_bytes().split_first() {
                    Some((1, error)) => Some(error),
                    _ => None,
                },
                _ => None,
            };
            if let Some(bytes) = failed {
                let error = match subxt::error::DispatchError::decode_from(bytes, at.metadata()) {
                    Ok(e) => dispatch_error(&e),
                    Err(e) => DispatchError::Other(format!("undecodable dispatch error: {e}")),
                };
                results[slot] = Err(error);
            } else if let Some(decoded) = self.market_event(number, &event)
                && let Ok(list) = &mut results[slot]
            {
                list.push(decoded);
            }
        }
        let found = ours
            .into_iter()
            .zip(results)
            .map(|((hash, index), result)| {
                (
                    hash,
                    submitter::Found {
                        block,
                        index,
                        result,
                    },
                )
            })
            .collect();
        Ok((read, found))
    }

    /// The hash of block `number` of the best chain (`None`: no such block).
    pub async fn block_hash(&self, number: u32) -> Result<Option<BlockHash>, ChainError> {
        let methods = subxt::rpcs::methods::LegacyRpcMethods::<
            subxt::config::RpcConfigFor<PolkadotConfig>,
        >::new(self.rpc.clone());
        let hash = methods
            .chain_get_block_hash(Some(u64::from(number).into()))
            .await
            .map_err(conn)?;
        Ok(hash.map(|h| BlockHash(h.0)))
    }

    /// Where a reader of the best chain that has read the blocks in `read`
    /// must go on: the lowest block it read that is no longer on the best
    /// chain (a re-org took it), or `next` if none was. Entries from there
    /// up are dropped from `read`.
    pub(super) async fn rewind(
        &self,
        read: &mut std::collections::BTreeMap<u32, BlockHash>,
        next: u32,
    ) -> Result<u32, ChainError> {
        let mut next = next;
        while let Some((&number, &hash)) = read.last_key_value() {
            if self.block_hash(number).await? == Some(hash) {
                break;
            }
            read.remove(&number);
            next = number;
        }
        Ok(next)
    }

    /// The events of a block that decode at all (the others are counted).
    fn decodable<'e>(
        &'e self,
        number: u32,
        events: &'e subxt::events::Events<PolkadotConfig>,
    ) -> impl Iterator<Item = subxt::events::Event<'e, PolkadotConfig>> + 'e {
        events.iter().filter_map(move |event| match event {
            Ok(e) => Some(e),
            Err(e) => {
                self.count_failure(number, &e.to_string());
                None
            }
        })
    }

    /// A task-market event in the crate's type; `None` for other pallets'
    /// events and (counted) for one that does not decode.
    fn market_event(
        &self,
        number: u32,
        event: &subxt::events::Event<'_, PolkadotConfig>,
    ) -> Option<MarketEvent> {
        if event.pallet_name() != PALLET {
            return None;
        }
        let mut bytes = vec![event.event_index()];
        bytes.extend_from_slice(event.field_bytes());
        // The whole value must decode, and the variant at that index must be
        // the one the metadata names: a runtime whose events differ in order
        // or layout gives a decode error, never a wrong event.
        let decoded = MarketEvent::decode_all(&mut &bytes[..])
            .map_err(|e| e.to_string())
            .and_then(|decoded| {
                if decoded.name() == event.event_name() {
                    Ok(decoded)
                } else {
                    Err(format!(
                        "index {} is {} here, {} in the chain's metadata",
                        event.event_index(),
                        decoded.name(),
                        event.event_name()
                    ))
                }
            });
        match decoded {
            Ok(decoded) => Some(decoded),
            Err(e) => {
                self.count_failure(
                    number,
                    &format!("{}::{}: {e}", event.pallet_name(), event.event_name()),
                );
                None
            }
        }
    }

    fn count_failure(&self, block: u32, what: &str) {
        self.decode_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(block, what, "task-market event failed to decode");
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

    /// A storage value holding a list of task ids, at a block.
    async fn task_list(&self, at: BlockHash, name: &str) -> Result<Vec<TaskId>, ChainError> {
        let block = self.history.at_block(H256(at.0)).await.map_err(conn)?;
        let addr = subxt::dynamic::storage::<(), Value>(PALLET, name);
        let value = block.storage().fetch(addr, ()).await.map_err(conn)?;
        let ids = Vec::<u64>::decode_all(&mut value.bytes()).map_err(|e| ChainError::Decode {
            what: name.into(),
            reason: e.to_string(),
        })?;
        Ok(ids.into_iter().map(TaskId).collect())
    }

    /// The node's best block (which may not be final yet).
    pub async fn best_head(&self) -> Result<BlockRef, ChainError> {
        let methods = subxt::rpcs::methods::LegacyRpcMethods::<
            subxt::config::RpcConfigFor<PolkadotConfig>,
        >::new(self.rpc.clone());
        let hash = methods
            .chain_get_block_hash(None)
            .await
            .map_err(conn)?
            .ok_or_else(|| {
                ChainError::Connection(ConnectionError::Missing("a best block".into()))
            })?;
        let header = methods
            .chain_get_header(Some(hash))
            .await
            .map_err(conn)?
            .ok_or_else(|| {
                ChainError::Connection(ConnectionError::Missing("the best block's header".into()))
            })?;
        Ok(BlockRef {
            number: u32::try_from(header.number).map_err(|e| ChainError::Decode {
                what: "block number".into(),
                reason: e.to_string(),
            })?,
            hash: BlockHash(hash.0),
        })
    }

    /// The number of the node's best block (which may not be final yet).
    pub async fn best_number(&self) -> Result<u32, ChainError> {
        let methods = subxt::rpcs::methods::LegacyRpcMethods::<
            subxt::config::RpcConfigFor<PolkadotConfig>,
        >::new(self.rpc.clone());
        let header = methods
            .chain_get_header(None)
            .await
            .map_err(conn)?
            .ok_or_else(|| {
                ChainError::Connection(ConnectionError::Missing("a best block".into()))
            })?;
        u32::try_from(header.number).map_err(|e| ChainError::Decode {
            what: "block number".into(),
            reason: e.to_string(),
        })
    }

    /// `Tasks(id)` at a block, decoded into the crate's [`TaskIntent`].
    pub async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        let block = self.history.at_block(H256(at.0)).await.map_err(conn)?;
        let addr = subxt::dynamic::storage::<(u64,), Value>(PALLET, "Tasks");
        let value = block
            .storage()
            .try_fetch(addr, (id.0,))
            .await
            .map_err(conn)?;
        match value {
            None => Ok(None),
            Some(v) => TaskIntent::decode_all(&mut v.bytes())
                .map(Some)
                .map_err(|e| ChainError::Decode {
                    what: format!("Tasks({id})"),
                    reason: e.to_string(),
                }),
        }
    }
}

/// The crate's view of a runtime dispatch error: module errors by pallet
/// and variant name.
fn dispatch_error(e: &subxt::error::DispatchError) -> DispatchError {
    match e {
        subxt::error::DispatchError::Module(m) => match m.details() {
            Ok(d) => DispatchError::Module {
                pallet: d.pallet.name().to_owned(),
                error: d.variant.name.clone(),
            },
            Err(_) => DispatchError::Other(e.to_string()),
        },
        subxt::error::DispatchError::BadOrigin => DispatchError::BadOrigin,
        other => DispatchError::Other(other.to_string()),
    }
}

/// Checks that the default backend can read the finalized block it
/// follows. A node whose `chainHead_v1_follow` events subxt cannot decode
/// (chopsticks 1.1 announces runtimes without the specification's
/// `{"type": "valid", "spec": …}` shape) makes subxt drop its follow
/// subscription, and every block read then fails "cannot find the block
/// header": better said at once than retried for ever.
async fn follows_blocks(api: &OnlineClient<PolkadotConfig>, url: &str) -> Result<(), ChainError> {
    const TRIES: u32 = 3;
    for attempt in 1..=TRIES {
        match api.at_current_block().await {
            Ok(_) => return Ok(()),
            Err(subxt::error::OnlineClientAtBlockError::BlockHeaderNotFound { .. })
                if attempt < TRIES =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(subxt::error::OnlineClientAtBlockError::BlockHeaderNotFound { block_hash }) => {
                return Err(ChainError::Unsupported(format!(
                    "{url} announces finalized block {block_hash:?} but serves no header for it \
                     through chainHead_v1 (its follow events do not decode, as chopsticks' do \
                     not); connect with --chain-backend legacy"
                )));
            }
            Err(e) => return Err(conn(e)),
        }
    }
    Ok(())
}

/// How many recently read best blocks are remembered to notice a re-org.
const REORG_WINDOW: usize = 32;

/// Blocks a submitted transaction stays valid for.
pub const MORTALITY: u64 = 64;

/// Classifies a refusal by the transaction pool. The pool answers over
/// JSON-RPC with text only (code 1010/1014 and a message), so its wording is
/// all there is to go on; dispatch errors, by contrast, are decoded by name.
fn pool_rejection(call: &'static str, nonce: Option<u64>, message: &str) -> SubmitError {
    let lower = message.to_ascii_lowercase();
    let n = nonce.unwrap_or(0);
    let reason = if lower.contains("outdated") || lower.contains("stale") {
        InvalidTransaction::Stale {
            nonce: n,
            expected: n + 1,
        }
    } else if lower.contains("priority is too low") || lower.contains("already imported") {
        InvalidTransaction::PriorityTooLow { nonce: n }
    } else if lower.contains("payment") || lower.contains("inability to pay") {
        InvalidTransaction::Payment
    } else if lower.contains("invalid transaction") {
        InvalidTransaction::Other(message.to_owned())
    } else {
        return SubmitError::Connection(ConnectionError::PoolAnswer {
            call,
            message: message.to_owned(),
        });
    };
    SubmitError::Invalid { call, reason }
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

/// Which head a block stream follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    Best,
    Finalized,
}

impl SubxtChain {
    /// The followed head.
    async fn head(&self, head: Head) -> Result<BlockRef, ChainError> {
        match head {
            Head::Best => self.best_head().await,
            Head::Finalized => self.finalized_head().await,
        }
    }

    /// Blocks by number up to the followed head, so a gap in the head
    /// subscription (or a start in the past) is filled in.
    fn follow(&self, from: Option<BlockNumber>, head: Head) -> BlockStream {
        struct Follow {
            chain: SubxtChain,
            head: Head,
            next: Option<u32>,
            known_head: u32,
            heads: Option<subxt::client::Blocks<PolkadotConfig>>,
            /// The best blocks delivered lately, by number: a re-org
            /// shows as one of them no longer on the best chain, and the
            /// stream goes on from there (a number it has passed).
            delivered: std::collections::BTreeMap<u32, BlockHash>,
        }
        let state = Follow {
            chain: self.clone(),
            head,
            next: from,
            known_head: 0,
            heads: None,
            delivered: std::collections::BTreeMap::new(),
        };
        Box::pin(futures::stream::unfold(state, |mut st| async move {
            loop {
                let next = match st.next {
                    Some(n) => n,
                    None => match st.chain.head(st.head).await {
                        Ok(head) => {
                            st.known_head = head.number;
                            st.next = Some(head.number + 1);
                            continue;
                        }
                        Err(e) => return Some((Err(e), st)),
                    },
                };
                if next <= st.known_head {
                    if st.head == Head::Best {
                        match st.chain.rewind(&mut st.delivered, next).await {
                            Ok(back) if back < next => {
                                st.next = Some(back);
                                continue;
                            }
                            Ok(_) => {}
                            Err(e) => return Some((Err(e), st)),
                        }
                    }
                    return match st.chain.block(next).await {
                        Ok(Some(block)) => {
                            st.next = Some(next + 1);
                            if st.head == Head::Best {
                                st.delivered.insert(block.number, block.hash);
                                while st.delivered.len() > REORG_WINDOW {
                                    st.delivered.pop_first();
                                }
                            }
                            Some((Ok(block), st))
                        }
                        Ok(None) => Some((
                            Err(ChainError::Connection(ConnectionError::Missing(format!(
                                "block #{next}"
                            )))),
                            st,
                        )),
                        Err(e) => Some((Err(e), st)),
                    };
                }
                if st.heads.is_none() {
                    let subscribed = match st.head {
                        Head::Best => st.chain.api.stream_best_blocks().await,
                        Head::Finalized => st.chain.api.stream_blocks().await,
                    };
                    match subscribed {
                        Ok(s) => st.heads = Some(s),
                        Err(e) => return Some((Err(conn(e)), st)),
                    }
                }
                let heads = st.heads.as_mut()?;
                match heads.next().await {
                    Some(Ok(b)) => {
                        let number = u32::try_from(b.number()).unwrap_or(u32::MAX);
                        st.known_head = st.known_head.max(number);
                        // A new best block at a height already delivered:
                        // the re-org is found on the next read.
                        if st.head == Head::Best
                            && st.delivered.get(&number).is_some_and(|h| h.0 != b.hash().0)
                        {
                            st.known_head = st.known_head.max(next);
                        }
                    }
                    Some(Err(e)) => return Some((Err(conn(e)), st)),
                    None => return None,
                }
            }
        }))
    }
}

impl ChainPort for SubxtChain {
    fn finalized_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        self.follow(from, Head::Finalized)
    }

    fn best_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        self.follow(from, Head::Best)
    }

    async fn best_head(&self) -> Result<BlockRef, ChainError> {
        SubxtChain::best_head(self).await
    }

    async fn finalized_head(&self) -> Result<BlockRef, ChainError> {
        SubxtChain::finalized_head(self).await
    }

    async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        SubxtChain::task(self, at, id).await
    }

    async fn assigned_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.task_list(at, "AssignedLane1Tasks").await
    }

    async fn open_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.task_list(at, "OpenLane1Tasks").await
    }

    async fn open_lane0_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.task_list(at, "OpenLane0Tasks").await
    }

    async fn account_nonce_at(&self, at: BlockHash, account: AccountId) -> Result<u64, ChainError> {
        let block = self.history.at_block(H256(at.0)).await.map_err(conn)?;
        let addr =
            subxt::dynamic::storage::<(subxt::utils::AccountId32,), Value>("System", "Account");
        let Some(info) = block
            .storage()
            .try_fetch(addr, (subxt::utils::AccountId32(account.0),))
            .await
            .map_err(conn)?
        else {
            // No account record: it never sent a transaction.
            return Ok(0);
        };
        let bad = |reason: String| ChainError::Decode {
            what: format!("System.Account({account}).nonce"),
            reason,
        };
        let value = info.decode().map_err(|e| bad(e.to_string()))?;
        use subxt::ext::scale_value::At as _;
        value
            .at("nonce")
            .and_then(|n| n.as_u128())
            .ok_or_else(|| bad("no unsigned `nonce` field".into()))
            .and_then(|n| u64::try_from(n).map_err(|e| bad(e.to_string())))
    }

    async fn account_nonce(&self, account: AccountId) -> Result<u64, ChainError> {
        let methods = subxt::rpcs::methods::LegacyRpcMethods::<
            subxt::config::RpcConfigFor<PolkadotConfig>,
        >::new(self.rpc.clone());
        methods
            .system_account_next_index(&subxt::utils::AccountId32(account.0))
            .await
            .map_err(conn)
    }
}
