//! The real-chain backend over subxt — work in progress, behind the
//! `real-chain` feature. What is here: a connection over the legacy RPC
//! backend (which works against chopsticks; the default backend does not),
//! the [`ChainPort`] (a gap-free finalized-block stream from any block number,
//! with task-market events decoded by pallet name into the crate's types;
//! storage reads at a block; the pool-aware next nonce), and signed
//! submission with default parameters. Not yet: the nonce-owning pipelined
//! submitter service, dispatch errors by variant name, reconnection, and a
//! persisted last-processed block.

use parity_scale_codec::Decode;
use subxt::backend::LegacyBackend;
use subxt::rpcs::RpcClient;
use subxt::utils::H256;
use subxt::{OnlineClient, PolkadotConfig};

use subxt::dynamic::Value;

use crate::chain::{
    BlockHash, BlockRef, BlockStream, ChainError, ChainPort, DispatchError, EventRecord,
    FinalizedBlock, Inclusion, InvalidTransaction, MarketCall, MarketEvent, PALLET, Phase,
    SubmitError, TaskIntent,
};
use crate::task::TaskId;
use crate::task::{AccountId, BlockNumber};

/// A connection to a Substrate node running the task market.
#[derive(Clone)]
pub struct SubxtChain {
    api: OnlineClient<PolkadotConfig>,
    rpc: RpcClient,
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
    ChainError::Connection(e.to_string())
}

impl SubxtChain {
    /// Connects to `url` (`ws://` is allowed: local test nodes) over the
    /// legacy RPC methods.
    pub async fn connect(url: &str) -> Result<Self, ChainError> {
        let rpc = RpcClient::from_insecure_url(url).await.map_err(conn)?;
        let backend = LegacyBackend::<PolkadotConfig>::builder().build(rpc.clone());
        let api = OnlineClient::from_backend(std::sync::Arc::new(backend))
            .await
            .map_err(conn)?;
        Ok(SubxtChain {
            api,
            rpc,
            decode_failures: Default::default(),
        })
    }

    /// Task-market events that failed to decode so far (each was logged).
    pub fn decode_failures(&self) -> u64 {
        self.decode_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The finalized block `number` with its task-market events, or `None`
    /// if the chain has no such block yet.
    pub async fn block(&self, number: u32) -> Result<Option<FinalizedBlock>, ChainError> {
        let at = match self.api.at_block(u64::from(number)).await {
            Ok(at) => at,
            Err(subxt::error::OnlineClientAtBlockError::BlockNotFound { .. }) => return Ok(None),
            Err(e) => return Err(conn(e)),
        };
        let header = at.block_header().await.map_err(conn)?;
        let events = at.events().fetch().await.map_err(conn)?;
        let mut records = Vec::new();
        for event in events.iter() {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    self.count_failure(number, &e.to_string());
                    continue;
                }
            };
            if event.pallet_name() != PALLET {
                continue;
            }
            let mut bytes = vec![event.event_index()];
            bytes.extend_from_slice(event.field_bytes());
            match MarketEvent::decode(&mut &bytes[..]) {
                Ok(decoded) => records.push(EventRecord {
                    phase: match event.phase() {
                        subxt::events::Phase::ApplyExtrinsic(i) => Phase::ApplyExtrinsic(i),
                        subxt::events::Phase::Finalization => Phase::Finalization,
                        subxt::events::Phase::Initialization => Phase::Initialization,
                    },
                    event: decoded,
                }),
                Err(e) => self.count_failure(
                    number,
                    &format!("{}::{}: {e}", event.pallet_name(), event.event_name()),
                ),
            }
        }
        Ok(Some(FinalizedBlock {
            number,
            hash: BlockHash(at.block_hash().0),
            parent_hash: BlockHash(header.parent_hash.0),
            events: records,
        }))
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

    /// `Tasks(id)` at a block, decoded into the crate's [`TaskIntent`].
    pub async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        let block = self.api.at_block(H256(at.0)).await.map_err(conn)?;
        let addr = subxt::dynamic::storage::<(u64,), Value>(PALLET, "Tasks");
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
        self.submit_signed_with(signer, call, None, || {})
            .await
            .map(|(hash, _)| hash)
    }

    /// As [`submit_signed`](Self::submit_signed), with an explicit nonce and
    /// a mortal era of [`MORTALITY`] blocks when `nonce` is given; also
    /// returns the extrinsic's index in its block. `accepted` runs as soon as
    /// the pool has taken the transaction, before it is final.
    pub async fn submit_signed_with(
        &self,
        signer: &subxt_signer::sr25519::Keypair,
        call: &MarketCall,
        nonce: Option<u64>,
        accepted: impl FnOnce(),
    ) -> Result<(BlockHash, u32), SubmitError> {
        let name = call.name();
        let payload = subxt::dynamic::tx(PALLET, name, call_fields(call));
        let mut txs = self
            .api
            .tx()
            .await
            .map_err(|e| SubmitError::Connection(e.to_string()))?;
        let submitted = match nonce {
            Some(n) => {
                let params = subxt::config::PolkadotExtrinsicParamsBuilder::<PolkadotConfig>::new()
                    .nonce(n)
                    .mortal(MORTALITY)
                    .build();
                txs.sign_and_submit_then_watch(&payload, signer, params)
                    .await
            }
            None => {
                txs.sign_and_submit_then_watch_default(&payload, signer)
                    .await
            }
        };
        let progress = submitted.map_err(|e| pool_rejection(name, nonce, &e.to_string()))?;
        accepted();
        let in_block = progress
            .wait_for_finalized()
            .await
            .map_err(|e| SubmitError::Connection(e.to_string()))?;
        let hash = BlockHash(in_block.block_hash().0);
        match in_block.wait_for_success().await {
            Ok(events) => Ok((
                hash,
                u32::try_from(events.extrinsic_index()).unwrap_or(u32::MAX),
            )),
            Err(subxt::error::TransactionEventsError::ExtrinsicFailed(e)) => {
                let error = match &e {
                    subxt::error::DispatchError::Module(m) => match m.details() {
                        Ok(d) => DispatchError::Module {
                            pallet: d.pallet.name().to_owned(),
                            error: d.variant.name.clone(),
                        },
                        Err(_) => DispatchError::Other(e.to_string()),
                    },
                    subxt::error::DispatchError::BadOrigin => DispatchError::BadOrigin,
                    other => DispatchError::Other(other.to_string()),
                };
                let number = self
                    .api
                    .at_block(H256(hash.0))
                    .await
                    .map(|at| u32::try_from(at.block_number()).unwrap_or(u32::MAX))
                    .map_err(|e| SubmitError::Connection(e.to_string()))?;
                Err(SubmitError::Dispatch {
                    call: name,
                    error,
                    block: BlockRef { number, hash },
                })
            }
            Err(e) => Err(SubmitError::Connection(format!("{name}: {e}"))),
        }
    }

    /// A submitter that signs as `signer`.
    pub fn submitter(&self, signer: subxt_signer::sr25519::Keypair) -> SubxtSubmitter {
        SubxtSubmitter {
            chain: self.clone(),
            account: AccountId(signer.public_key().0),
            signer: std::sync::Arc::new(signer),
            nonce: Default::default(),
        }
    }
}

/// Submits task-market calls as one account: a `tower::Service<MarketCall>`
/// like the dev chain's, and the one owner of the account's nonce. Nonces are
/// assigned here (seeded from the pool-aware next index), so several calls
/// can be in flight at once; each is mortal and watched to finality. When the
/// pool refuses one, the nonce is re-read from the chain before the next.
#[derive(Clone)]
pub struct SubxtSubmitter {
    chain: SubxtChain,
    account: AccountId,
    signer: std::sync::Arc<subxt_signer::sr25519::Keypair>,
    nonce: std::sync::Arc<tokio::sync::Mutex<Option<u64>>>,
}

impl std::fmt::Debug for SubxtSubmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SubxtSubmitter")
            .field("account", &self.account)
            .finish()
    }
}

impl tower::Service<MarketCall> for SubxtSubmitter {
    type Response = Inclusion;
    type Error = SubmitError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Inclusion, SubmitError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: MarketCall) -> Self::Future {
        let chain = self.chain.clone();
        let signer = self.signer.clone();
        let nonce_state = self.nonce.clone();
        let account = self.account;
        Box::pin(async move {
            // Transactions reach the pool in nonce order: the lock is held
            // until the pool has taken this one, then released so that the
            // next can be sent while this one waits for finality.
            let mut next = nonce_state.clone().lock_owned().await;
            let nonce = match *next {
                Some(n) => n,
                None => chain
                    .account_nonce(account)
                    .await
                    .map_err(|e| SubmitError::Connection(e.to_string()))?,
            };
            *next = Some(nonce + 1);
            let taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mark = taken.clone();
            let mut guard = Some(next);
            let result = chain
                .submit_signed_with(&signer, &call, Some(nonce), || {
                    mark.store(true, std::sync::atomic::Ordering::SeqCst);
                    guard.take();
                })
                .await;
            let (hash, index) = match result {
                Ok(done) => done,
                Err(e) => {
                    if !taken.load(std::sync::atomic::Ordering::SeqCst) {
                        // The pool did not take it: start again from the
                        // chain's view of the next nonce.
                        match guard.as_mut() {
                            Some(g) => **g = None,
                            None => *nonce_state.lock().await = None,
                        }
                    }
                    return Err(e);
                }
            };
            let at = chain
                .api
                .at_block(H256(hash.0))
                .await
                .map_err(|e| SubmitError::Connection(e.to_string()))?;
            let number = u32::try_from(at.block_number()).unwrap_or(u32::MAX);
            let block = chain
                .block(number)
                .await
                .map_err(|e| SubmitError::Connection(e.to_string()))?;
            // The call's own events, as the dev chain reports them.
            let events = block
                .map(|b| {
                    b.events
                        .into_iter()
                        .filter(|r| r.phase == Phase::ApplyExtrinsic(index))
                        .map(|r| r.event)
                        .collect()
                })
                .unwrap_or_default();
            Ok(Inclusion {
                block: BlockRef { number, hash },
                index,
                nonce,
                events,
            })
        })
    }
}

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
        return SubmitError::Connection(format!("{call}: {message}"));
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

impl ChainPort for SubxtChain {
    fn finalized_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        struct Follow {
            chain: SubxtChain,
            next: Option<u32>,
            known_head: u32,
            heads: Option<subxt::client::Blocks<PolkadotConfig>>,
        }
        let state = Follow {
            chain: self.clone(),
            next: from,
            known_head: 0,
            heads: None,
        };
        // Blocks are fetched by number up to the newest finalized head, so a
        // gap in the head subscription (or a start in the past) is filled in.
        Box::pin(futures::stream::unfold(state, |mut st| async move {
            loop {
                let next = match st.next {
                    Some(n) => n,
                    None => match st.chain.finalized_head().await {
                        Ok(head) => {
                            st.known_head = head.number;
                            st.next = Some(head.number + 1);
                            continue;
                        }
                        Err(e) => return Some((Err(e), st)),
                    },
                };
                if next <= st.known_head {
                    return match st.chain.block(next).await {
                        Ok(Some(block)) => {
                            st.next = Some(next + 1);
                            Some((Ok(block), st))
                        }
                        Ok(None) => Some((
                            Err(ChainError::Connection(format!(
                                "finalized block #{next} is missing"
                            ))),
                            st,
                        )),
                        Err(e) => Some((Err(e), st)),
                    };
                }
                if st.heads.is_none() {
                    match st.chain.api.stream_blocks().await {
                        Ok(s) => st.heads = Some(s),
                        Err(e) => return Some((Err(conn(e)), st)),
                    }
                }
                let heads = st.heads.as_mut()?;
                match heads.next().await {
                    Some(Ok(b)) => {
                        st.known_head = st
                            .known_head
                            .max(u32::try_from(b.number()).unwrap_or(u32::MAX));
                    }
                    Some(Err(e)) => return Some((Err(conn(e)), st)),
                    None => return None,
                }
            }
        }))
    }

    async fn finalized_head(&self) -> Result<BlockRef, ChainError> {
        SubxtChain::finalized_head(self).await
    }

    async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        SubxtChain::task(self, at, id).await
    }

    async fn assigned_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        let block = self.api.at_block(H256(at.0)).await.map_err(conn)?;
        let addr = subxt::dynamic::storage::<(), Value>(PALLET, "AssignedLane1Tasks");
        let value = block.storage().fetch(addr, ()).await.map_err(conn)?;
        let ids = Vec::<u64>::decode(&mut value.bytes()).map_err(|e| ChainError::Decode {
            what: "AssignedLane1Tasks".into(),
            reason: e.to_string(),
        })?;
        Ok(ids.into_iter().map(TaskId).collect())
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
