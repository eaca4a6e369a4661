//! Wires a whole Lane 1 node: listener, standard stack and executor, over any
//! chain backend and sidecar.
//!
//! ```no_run
//! use nsn_lane1::chain::dev::{DevChain, DevConfig};
//! use nsn_lane1::executor::ExecutorConfig;
//! use nsn_lane1::node::{Node, NodeParts};
//! use nsn_lane1::sidecar::client::{SidecarClient, SidecarConfig};
//! use nsn_lane1::task::AccountId;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let chain = DevChain::new(DevConfig::default())?;
//! let sidecar = SidecarClient::connect_lazy(SidecarConfig::new("http://127.0.0.1:50051"))?;
//! // Any chain port and submitter: `NodeParts::new(port, submit, account, sidecar)`.
//! let node = Node::spawn(
//!     ExecutorConfig::default(),
//!     NodeParts::dev(&chain, AccountId::BOB, sidecar),
//! );
//! let report = node.stop().await?;
//! println!("{report:?}");
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::layer::util::{Identity, Stack};
use tower::{BoxError, Layer, Service};

use crate::admission::{Admission, watch_sidecars};
use crate::chain::{ChainPort, MarketCall, Pooled, SubmitError};
use crate::checkpoint::Checkpoint;
use crate::executor::{Executor, ExecutorConfig, ExecutorError, ExecutorParts, ExecutorReport};
use crate::handles::Handles;
use crate::layer::preempt::Preemptor;
use crate::lifecycle::TaskBoard;
use crate::listener::{ChainListener, ListenerError};

use crate::sidecar::client::{ExecuteRequest, ExecutionResult};
use crate::sidecar::set::{SetExecute, SidecarSet};
use crate::stack::{ExecuteStack, StackParts, SubmitStack, build_stack_with, submit_stack};
use crate::submitter::{CountedCalls, GuardedOutcome};
use crate::task::{AccountId, ModelId};
use crate::telemetry::metrics::Lane1Metrics;

/// How often the sidecar's health is asked (every second while it does
/// not answer).
const SIDECAR_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Events buffered between the listener and the executor.
const EVENT_BUFFER: usize = 1024;

/// What a node is made of.
#[derive(Debug)]
pub struct NodeParts<P, C> {
    /// Chain reads.
    pub port: P,
    /// The chain submitter for our account.
    pub submit: C,
    /// Our account.
    pub account: AccountId,
    /// The sidecars (one, or several: each run is placed on one that
    /// serves its model; see [`SidecarSet`]).
    pub sidecar: SidecarSet,
    /// The models to take candidates for (`None`: the Lane 1 models the
    /// sidecars report, or all if they cannot say).
    pub models: Option<HashSet<ModelId>>,
    /// Where metrics go.
    pub metrics: Lane1Metrics,
    /// Where the last handled finalized block is kept; the node then starts
    /// by backfilling from the block after it. `None`: start at the head
    /// (start-up reconciliation still resumes every task in our hands).
    pub checkpoint: Option<crate::checkpoint::Checkpoint>,
}

impl<P, C> NodeParts<P, C> {
    /// The parts of a node for `account` reading the chain through `port`
    /// and signing through `submit`, running models on `sidecar` (a
    /// [`SidecarClient`](crate::sidecar::client::SidecarClient) or a
    /// [`SidecarSet`]); models from the sidecars,
    /// fresh metrics, no checkpoint.
    pub fn new(port: P, submit: C, account: AccountId, sidecar: impl Into<SidecarSet>) -> Self {
        NodeParts {
            port,
            submit,
            account,
            sidecar: sidecar.into(),
            models: None,
            metrics: Lane1Metrics::default(),
            checkpoint: None,
        }
    }

    /// Takes candidates for these models only.
    pub fn models(mut self, models: HashSet<ModelId>) -> Self {
        self.models = Some(models);
        self
    }

    /// Records into these metrics.
    pub fn metrics(mut self, metrics: Lane1Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Keeps the last handled block here (and backfills from it at start).
    pub fn checkpoint(mut self, checkpoint: crate::checkpoint::Checkpoint) -> Self {
        self.checkpoint = Some(checkpoint);
        self
    }
}

#[cfg(feature = "dev")]
impl NodeParts<crate::chain::dev::DevChain, crate::chain::dev::DevSubmitter> {
    /// The parts of a node for `account` on the embedded dev chain.
    pub fn dev(
        chain: &crate::chain::dev::DevChain,
        account: AccountId,
        sidecar: impl Into<SidecarSet>,
    ) -> Self {
        NodeParts::new(chain.clone(), chain.submitter(account), account, sidecar)
    }
}

/// Why a node stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The executor failed.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// A node task panicked or was aborted.
    #[error("node task ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// Task states.
    pub board: TaskBoard,
    /// Preempts running tasks (for the node's Lane 0 side).
    pub preemptor: Preemptor,
    /// The node's metrics.
    pub metrics: Lane1Metrics,
    /// What is checked before a task is started: the sidecar's health,
    /// the stake breaker, the tasks held for set-up faults.
    pub admission: Admission,
    /// The nonces the node signed with (a part of the node that signs
    /// with its key beside it records its own here; see [`crate::signer`]).
    pub nonces: crate::signer::OwnNonces,
    shutdown: CancellationToken,
    following: tokio::sync::watch::Receiver<Option<crate::task::BlockNumber>>,
    liveness: Liveness,
    executor: JoinHandle<Result<ExecutorReport, ExecutorError>>,
    listener: JoinHandle<Result<(), ListenerError>>,
}

/// Whether a node is alive: `Err` with the cause once its listener or
/// executor stopped without being asked to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Liveness(tokio::sync::watch::Receiver<Option<String>>);

impl Liveness {
    /// `Ok` while alive; the cause of death after.
    pub fn check(&self) -> Result<(), String> {
        match &*self.0.borrow() {
            None => Ok(()),
            Some(cause) => Err(cause.clone()),
        }
    }

    /// Waits until the node dies; its cause.
    pub async fn dead(&self) -> String {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(cause) => cause.clone().unwrap_or_default(),
            // The node itself is gone (dropped): it lives no more.
            Err(_) => "the node was dropped".to_owned(),
        }
    }
}

/// The Lane 1 models the sidecars serve, with their worst-case latencies in
/// ms, or `None` (take candidates for any model) if none can say within its
/// connect timeout.
async fn lane1_models(sidecars: &SidecarSet) -> Option<HashMap<ModelId, u32>> {
    let wait = sidecars.connect_timeout();
    if tokio::time::timeout(wait, sidecars.check()).await.is_err() {
        tracing::warn!("sidecar capabilities timed out; taking candidates for any model");
        return None;
    }
    let models = sidecars.lane1_models();
    if models.is_none() {
        tracing::warn!("sidecar capabilities unavailable; taking candidates for any model");
    }
    models
}

impl Node {
    /// Starts the listener and the executor, with the standard stack, on
    /// the current runtime (`Node::builder(config, parts).spawn()`).
    pub fn spawn<P, C>(config: ExecutorConfig, parts: NodeParts<P, C>) -> Node
    where
        P: ChainPort,
        C: Service<MarketCall, Response = Pooled, Error = SubmitError>
            + Clone
            + Send
            + Sync
            + 'static,
        C::Future: Send,
    {
        Node::builder(config, parts).spawn()
    }

    /// A node to be built with layers of a node builder's own around the
    /// standard stack; see [`NodeBuilder`].
    pub fn builder<P, C>(config: ExecutorConfig, parts: NodeParts<P, C>) -> NodeBuilder<P, C> {
        NodeBuilder {
            config,
            parts,
            execute_layer: Identity::new(),
            submit_layer: Identity::new(),
        }
    }
}

/// A node with layers of your own around the standard stack: the wiring
/// (listener, executor, confirmer, sidecar watch, the shared record of sent
/// calls, metrics) is the node's; the layers are yours.
///
/// `execute_layer` wraps the execute stack, outside its concurrency limit
/// (it sees every model run the lifecycle asks for: tracing, load
/// shedding, a quota); `submit_layer` wraps each submit stack, outside its
/// retry (every chain call the node makes). Layers added first are
/// outermost, as with [`tower::ServiceBuilder`].
///
/// ```no_run
/// use nsn_lane1::chain::dev::{DevChain, DevConfig};
/// use nsn_lane1::executor::ExecutorConfig;
/// use nsn_lane1::node::{Node, NodeParts};
/// use nsn_lane1::sidecar::client::{ExecuteRequest, SidecarClient, SidecarConfig};
/// use nsn_lane1::task::AccountId;
/// use tower::util::MapRequestLayer;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let chain = DevChain::new(DevConfig::default())?;
/// let sidecar = SidecarClient::connect_lazy(SidecarConfig::new("http://127.0.0.1:50051"))?;
/// let parts = NodeParts::dev(&chain, AccountId::BOB, sidecar);
/// let node = Node::builder(ExecutorConfig::default(), parts)
///     // Every model run, logged as the lifecycle asks for it.
///     .execute_layer(MapRequestLayer::new(|run: ExecuteRequest| {
///         tracing::info!(run = %run.run(), model = %run.model, "run");
///         run
///     }))
///     // Chain calls shed, not queued, when the submitter is full.
///     .submit_layer(tower::load_shed::LoadShedLayer::new())
///     .spawn();
/// node.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NodeBuilder<P, C, LE = Identity, LS = Identity> {
    config: ExecutorConfig,
    parts: NodeParts<P, C>,
    execute_layer: LE,
    submit_layer: LS,
}

impl<P, C, LE, LS> NodeBuilder<P, C, LE, LS> {
    /// Adds `layer` around the execute stack (inside the layers added
    /// before it).
    pub fn execute_layer<L>(self, layer: L) -> NodeBuilder<P, C, Stack<L, LE>, LS> {
        NodeBuilder {
            config: self.config,
            parts: self.parts,
            execute_layer: Stack::new(layer, self.execute_layer),
            submit_layer: self.submit_layer,
        }
    }

    /// Adds `layer` around each submit stack (inside the layers added
    /// before it).
    pub fn submit_layer<L>(self, layer: L) -> NodeBuilder<P, C, LE, Stack<L, LS>> {
        NodeBuilder {
            config: self.config,
            parts: self.parts,
            execute_layer: self.execute_layer,
            submit_layer: Stack::new(layer, self.submit_layer),
        }
    }

    /// Starts the listener and the executor on the current runtime.
    pub fn spawn(self) -> Node
    where
        P: ChainPort,
        C: Service<MarketCall, Response = Pooled, Error = SubmitError>
            + Clone
            + Send
            + Sync
            + 'static,
        C::Future: Send,
        LE: Layer<ExecuteStack<SetExecute>>,
        LE::Service: Service<ExecuteRequest, Response = ExecutionResult> + Clone + Send + 'static,
        <LE::Service as Service<ExecuteRequest>>::Error: Into<BoxError>,
        <LE::Service as Service<ExecuteRequest>>::Future: Send,
        LS: Layer<SubmitStack<CountedCalls<C>, P>>,
        LS::Service:
            Service<MarketCall, Response = Pooled<GuardedOutcome>> + Clone + Send + Sync + 'static,
        <LS::Service as Service<MarketCall>>::Error: Into<BoxError>,
        <LS::Service as Service<MarketCall>>::Future: Send,
    {
        let NodeBuilder {
            config,
            parts,
            execute_layer,
            submit_layer,
        } = self;
        // Every nonce the node signs is kept, to tell another signer's.
        let nonces = crate::signer::OwnNonces::default();
        // Every chain call of the node is counted (calls, outcomes, and
        // transactions outstanding).
        let parts = NodeParts {
            submit: crate::submitter::CountedCalls::new(parts.submit, parts.metrics.clone())
                .own_nonces(nonces.clone()),
            port: parts.port,
            account: parts.account,
            sidecar: parts.sidecar,
            models: parts.models,
            metrics: parts.metrics,
            checkpoint: parts.checkpoint,
        };
        // What is checked before a start, kept current by a watch on the
        // sidecar (its health and capabilities, each call with a deadline).
        let admission = Admission::with_breaker(
            config.admission.clone(),
            crate::breaker::StakeBreaker::new(config.breaker.clone()),
        );
        // One bundle of handles the node's parts share; among them one
        // record of sent calls for the account, so the lifecycle's and the
        // executor's submit stacks never send the same call twice between
        // them.
        let handles = Handles::new(parts.metrics.clone(), admission.clone());
        if !parts.sidecar.all_serve_lane0() {
            let set = parts.sidecar.clone();
            handles
                .preemptor
                .scope_lane0(move |task| set.on_lane0_sidecar(task));
        }
        let board = handles.board.clone();
        let preemptor = handles.preemptor.clone();
        let sent = handles.sent.clone();
        let shutdown = CancellationToken::new();
        parts.sidecar.record_into(parts.metrics.clone());
        tokio::spawn(watch_sidecars(
            parts.sidecar.clone(),
            admission.clone(),
            SIDECAR_CHECK,
            shutdown.clone(),
        ));
        // Calls count once final: those a retracted block held are sent
        // again.
        tokio::spawn(
            crate::confirm::Confirmer::new(
                parts.submit.clone(),
                parts.port.clone(),
                parts.account,
                sent.clone(),
                parts.metrics.clone(),
            )
            .watch_signers(nonces.clone(), admission.clone())
            .run(shutdown.clone()),
        );
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let listener_port = parts.port.clone();
        let listener_metrics = parts.metrics.clone();
        let listener_sidecar = parts.sidecar.clone();
        let models = parts.models;
        let canceller = parts.sidecar.canceller();
        let stack = build_stack_with(
            &config,
            StackParts {
                execute: parts.sidecar.execute(),
                canceller,
                submit: parts.submit.clone(),
                port: parts.port.clone(),
                account: parts.account,
                handles: handles.clone(),
            },
            &execute_layer,
            &submit_layer,
        );
        let node_admission = admission.clone();
        let listener_admission = admission.clone();
        let listener_sent = sent.clone();
        let lane0_hints = config.lane0_hints;
        let submit = submit_layer.layer(submit_stack(
            &config,
            parts.submit,
            parts.port.clone(),
            parts.account,
            sent.clone(),
        ));
        let executor = Executor::new(
            config,
            stack,
            ExecutorParts {
                events: rx,
                submit,
                handles,
            },
        );
        let checkpoint = parts.checkpoint;
        let executor = match checkpoint.clone() {
            Some(cp) => executor.checkpoint(cp),
            None => executor,
        };
        let stop = shutdown.clone();
        let (death, liveness) = tokio::sync::watch::channel(None::<String>);
        let executor = tokio::spawn({
            let death = death.clone();
            async move {
                let result = executor.run(stop.clone().cancelled_owned()).await;
                if !stop.is_cancelled() {
                    let cause = match &result {
                        Ok(_) => "the executor stopped: its event source ended".to_owned(),
                        Err(e) => format!("the executor failed: {e}"),
                    };
                    tracing::error!(%cause, "node died");
                    // The first cause is the root one: an executor whose
                    // events stopped because the listener died says so
                    // after the listener has.
                    death.send_if_modified(|d| {
                        let first = d.is_none();
                        if first {
                            *d = Some(cause);
                        }
                        first
                    });
                }
                result
            }
        });
        let account = parts.account;
        let (following_tx, following) = tokio::sync::watch::channel(None);
        let listener = tokio::spawn(async move {
            let models = match models {
                Some(m) => Some(m),
                None => lane1_models(&listener_sidecar).await.map(|served| {
                    // Known before the first task arrives: nothing the
                    // sidecar does not serve is started.
                    listener_admission.set_served(served.clone());
                    served.into_keys().collect()
                }),
            };
            let listener = ChainListener::new(listener_port, account, models, tx, listener_metrics)
                .sent_calls(listener_sent)
                .admission(listener_admission.clone())
                .lane0_hints(lane0_hints)
                .report_following(following_tx);
            let from = match checkpoint.as_ref().map(Checkpoint::load) {
                None | Some(Ok(None)) => None,
                Some(Ok(Some(last))) => Some(last + 1),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "cannot resume from the checkpoint");
                    death.send_replace(Some(format!("the listener stopped: {e}")));
                    return Err(ListenerError::Checkpoint(e));
                }
            };
            let result = listener.run(from).await;
            if let Err(e) = &result {
                match e {
                    ListenerError::ExecutorGone => {}
                    e => {
                        tracing::error!(error = %e, "listener stopped");
                        death.send_replace(Some(format!("the listener stopped: {e}")));
                    }
                }
            }
            result
        });
        Node {
            board,
            preemptor,
            metrics: parts.metrics,
            admission: node_admission,
            nonces,
            shutdown,
            following,
            liveness: Liveness(liveness),
            executor,
            listener,
        }
    }
}

impl Node {
    /// Whether the node is alive: its listener and executor run (or were
    /// stopped on purpose). For `/healthz`, and to exit when the node dies.
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }

    /// Waits until the listener has reconciled and follows the chain, and
    /// returns the first block it follows (`None` if it stopped first). From
    /// then on no event is missed.
    pub async fn following(&self) -> Option<crate::task::BlockNumber> {
        let mut rx = self.following.clone();
        rx.wait_for(Option::is_some).await.ok().and_then(|v| *v)
    }

    /// True once the executor has stopped (after [`stop`](Self::stop), or
    /// because the listener ended).
    pub fn is_finished(&self) -> bool {
        self.executor.is_finished()
    }

    /// Tears the node down the way `kill -9` would: its listener and
    /// executor are aborted mid-flight, nothing drains, nothing is failed
    /// or flushed (the checkpoint keeps what it last wrote). For crash
    /// tests; a node restarted from the same checkpoint picks up what was
    /// left.
    pub async fn kill(self) {
        self.executor.abort();
        self.listener.abort();
        let _ = self.executor.await;
        let _ = self.listener.await;
        // The sidecar watch is the last task of the node.
        self.shutdown.cancel();
    }

    /// Stops gracefully and returns what the executor did.
    pub async fn stop(self) -> Result<ExecutorReport, NodeError> {
        self.shutdown.cancel();
        let report = self.executor.await??;
        self.listener.abort();
        Ok(report)
    }
}

/// Ready when the chain answers with its head, the sidecar with a healthy
/// `HealthCheck`, and — given a node's admission — its stake breaker is
/// closed and no task is held for a set-up fault.
pub fn ready_check<P: ChainPort>(
    chain: P,
    sidecar: impl Into<SidecarSet>,
    admission: Option<crate::admission::Admission>,
) -> crate::telemetry::http::ReadyCheck {
    let sidecar: SidecarSet = sidecar.into();
    std::sync::Arc::new(move || {
        let chain = chain.clone();
        let sidecar = sidecar.clone();
        let admission = admission.clone();
        Box::pin(async move {
            chain
                .finalized_head()
                .await
                .map_err(|e| format!("chain: {e}"))?;
            // Ready while any sidecar is.
            let mut why = Vec::new();
            for member in sidecar.members() {
                match member.client().health().await {
                    Ok(h) if h.healthy => {
                        why.clear();
                        break;
                    }
                    Ok(h) => why.push(format!(
                        "sidecar {} unhealthy: {}",
                        member.endpoint(),
                        h.status
                    )),
                    Err(e) => why.push(format!("sidecar {}: {e}", member.endpoint())),
                }
            }
            if !why.is_empty() {
                return Err(why.join("; "));
            }
            match admission {
                Some(a) => a.readiness().map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    })
}
