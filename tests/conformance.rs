//! Conformance: the pallet's rules, each as a scenario run against the
//! embedded dev chain and against the dev runtime under chopsticks (and,
//! when `NSN_OMNI_NODE` names one, its parachain flavour under
//! `polkadot-omni-node`, on both subxt backends), through the same port and
//! submitter interfaces. Each scenario's transcript —
//! every call's events (or its error by variant name) and the reads it
//! makes (statuses, stakes, reserved balances, open queues) — must be equal
//! on both, and the test then checks what the scenario is about.
//!
//! The rules are the deployed pallet's (`TASK_MARKET.md`, "Behaviour
//! details"): slashes by the preemption hook and on rejection, priority-ordered
//! open queues, expiry in the deadline block, one executor per block's
//! assignments, `TaskNotOpen` / `TaskNotAssigned` status errors, empty
//! attestation CIDs refused on both lanes, the verification deadline block
//! belonging to the hook, and the full `RendererRegistered` event.
#![cfg(all(feature = "real-chain", feature = "dev"))]

mod support;

use std::collections::BTreeMap;

use nsn_lane1::chain::dev::{BlockMode, DevChain, DevConfig, DevGenesis};
use nsn_lane1::chain::subxt::{Backend, SubxtChain, SubxtSubmitter};
use nsn_lane1::chain::{
    ChainPort, DispatchError, Inclusion, MarketCall, MarketEvent, Pooled, SubmitError, SubmitExt,
    created_task_id,
};
use nsn_lane1::task::{AccountId, FailReason, Lane, Priority, TaskId, TaskStatus, UNIT};
use parity_scale_codec::Decode;
use tower::{Service, ServiceExt};

const ALICE: AccountId = AccountId::ALICE;
const BOB: AccountId = AccountId::BOB;
const CHARLIE: AccountId = AccountId::CHARLIE;
const DAVE: AccountId = AccountId::DAVE;
const EVE: AccountId = AccountId::EVE;

const INPUT: &[u8] = b"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
const OUTPUT: &[u8] = b"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

/// A chain the scenarios run on.
trait Chain {
    /// Signs calls as one account (or as root).
    type Signer: Service<MarketCall, Response = Pooled, Error = SubmitError> + Clone;
    /// A signer for `who`.
    fn signer(&self, who: AccountId) -> Self::Signer;
    /// A signer with root origin.
    fn root(&self) -> Self::Signer;
    /// Builds `n` empty blocks (or waits for them, on a chain that builds
    /// its own).
    async fn new_blocks(&self, n: u32);
    /// Builds (or waits for) blocks until the head is block `number`.
    async fn until_block(&self, number: u32);
    /// An executor's stake.
    async fn stake(&self, who: AccountId) -> u128;
    /// An account's reserved balance (escrow, stake).
    async fn reserved(&self, who: AccountId) -> u128;
    /// A task's status at the head.
    async fn status(&self, id: TaskId) -> Option<TaskStatus>;
    /// `OpenLane1Tasks` at the head.
    async fn open_lane1(&self) -> Vec<TaskId>;
}

struct Dev(DevChain);

impl Chain for Dev {
    type Signer = nsn_lane1::chain::dev::DevSubmitter;
    fn signer(&self, who: AccountId) -> Self::Signer {
        self.0.submitter(who)
    }
    fn root(&self) -> Self::Signer {
        self.0.sudo()
    }
    async fn new_blocks(&self, n: u32) {
        self.0.produce_blocks(n);
    }
    async fn until_block(&self, number: u32) {
        let head = self.0.finalized_head().await.expect("head").number;
        self.0.produce_blocks(number.saturating_sub(head));
    }
    async fn stake(&self, who: AccountId) -> u128 {
        self.0
            .with_market(|m| m.executor(&who).map_or(0, |e| e.stake))
    }
    async fn reserved(&self, who: AccountId) -> u128 {
        self.0.with_market(|m| m.account(&who).reserved)
    }
    async fn status(&self, id: TaskId) -> Option<TaskStatus> {
        self.0.with_market(|m| m.task(id).map(|t| t.status))
    }
    async fn open_lane1(&self) -> Vec<TaskId> {
        let head = self.0.finalized_head().await.expect("head");
        self.0.open_lane1_tasks(head.hash).await.expect("open list")
    }
}

/// The runtime under a node. One submitter per account, kept for the
/// whole run: a submitter owns its account's nonce, so two for one account
/// would race for it.
struct Real(
    SubxtChain,
    std::sync::Mutex<BTreeMap<AccountId, SubxtSubmitter>>,
    Blocks,
);

/// How a node makes blocks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blocks {
    /// On request (chopsticks' `dev_newBlock`), and one per transaction.
    OnRequest,
    /// On its own, a block at a time (polkadot-omni-node's dev mode): a
    /// call lands in the next block, and "new blocks" are waited for.
    Timed,
}

impl Real {
    async fn on(url: &str, backend: Backend, blocks: Blocks) -> Real {
        let chain = SubxtChain::connect(url, backend).await.expect("connects");
        Real(chain, Default::default(), blocks)
    }
}

fn keypair(who: AccountId) -> subxt_signer::sr25519::Keypair {
    use subxt_signer::sr25519::dev;
    [
        dev::alice(),
        dev::bob(),
        dev::charlie(),
        dev::dave(),
        dev::eve(),
        dev::ferdie(),
    ]
    .into_iter()
    .find(|k| k.public_key().0 == who.0)
    .expect("a dev account")
}

impl Real {
    async fn storage(&self, pallet: &str, entry: &str) -> Vec<u8> {
        let at = self.0.client().at_current_block().await.expect("head");
        let addr = subxt::dynamic::storage::<(), subxt::dynamic::Value>(pallet, entry);
        let value = at.storage().fetch(addr, ()).await.expect("storage read");
        value.bytes().to_vec()
    }
}

impl Chain for Real {
    type Signer = SubxtSubmitter;
    fn signer(&self, who: AccountId) -> Self::Signer {
        let mut signers = self.1.lock().expect("signers");
        signers
            .entry(who)
            .or_insert_with(|| self.0.submitter(keypair(who)))
            .clone()
    }
    fn root(&self) -> Self::Signer {
        // Alice holds the dev runtime's sudo key; root calls own her nonce
        // while they run, so a scenario with root calls signs nothing else
        // as Alice.
        self.0.sudo_submitter(keypair(ALICE))
    }
    async fn new_blocks(&self, n: u32) {
        let head = ChainPort::finalized_head(&self.0).await.expect("head");
        self.until_block(head.number + n).await;
    }
    async fn until_block(&self, number: u32) {
        use futures::StreamExt;
        use subxt::rpcs::client::rpc_params;
        let head = ChainPort::finalized_head(&self.0).await.expect("head");
        if head.number >= number {
            return;
        }
        if self.2 == Blocks::Timed {
            let mut blocks = self.0.finalized_blocks(Some(head.number + 1));
            return tokio::time::timeout(std::time::Duration::from_secs(600), async {
                while let Some(block) = blocks.next().await {
                    if block.expect("block").number >= number {
                        return;
                    }
                }
                panic!("the block stream ended");
            })
            .await
            .expect("the node builds blocks");
        }
        let n = number - head.number;
        let _: serde_json::Value = self
            .0
            .rpc()
            .request(
                "dev_newBlock",
                rpc_params![serde_json::json!({ "count": n })],
            )
            .await
            .expect("dev_newBlock");
    }
    async fn stake(&self, who: AccountId) -> u128 {
        // The dev runtime's executor registry: (account, stake, lanes).
        let bytes = self.storage("NsnTaskMarket", "Executors").await;
        let executors =
            <Vec<([u8; 32], u128, Vec<u8>)>>::decode(&mut &bytes[..]).expect("Executors");
        executors
            .into_iter()
            .find(|(a, _, _)| *a == who.0)
            .map_or(0, |(_, stake, _)| stake)
    }
    async fn reserved(&self, who: AccountId) -> u128 {
        let at = self.0.client().at_current_block().await.expect("head");
        let addr = subxt::dynamic::storage::<(subxt::utils::AccountId32,), subxt::dynamic::Value>(
            "System", "Account",
        );
        let value = at
            .storage()
            .fetch(addr, (subxt::utils::AccountId32(who.0),))
            .await
            .expect("System::Account");
        // AccountInfo: nonce, consumers, providers, sufficients (u32 each),
        // then free, reserved, frozen, flags (u128 each).
        let bytes = value.bytes();
        u128::from_le_bytes(bytes[32..48].try_into().expect("16 bytes"))
    }
    async fn status(&self, id: TaskId) -> Option<TaskStatus> {
        let head = self.0.finalized_head().await.expect("head");
        self.0
            .task(head.hash, id)
            .await
            .expect("Tasks")
            .map(|t| t.status)
    }
    async fn open_lane1(&self) -> Vec<TaskId> {
        let head = ChainPort::finalized_head(&self.0).await.expect("head");
        self.0.open_lane1_tasks(head.hash).await.expect("open list")
    }
}

/// What happened, step by step, in a form both chains can be compared by.
#[derive(Debug, Default)]
struct Transcript {
    steps: Vec<(String, String)>,
}

impl Transcript {
    fn record(&mut self, what: &str, value: impl std::fmt::Debug) {
        self.steps.push((what.to_owned(), format!("{value:?}")));
    }

    /// The recorded value of the step named `what` (the last, if repeated).
    fn get(&self, what: &str) -> &str {
        self.steps
            .iter()
            .rev()
            .find(|(w, _)| w == what)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no step {what:?}"))
    }

    /// Every error variant the transcript reached.
    fn errors(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|(_, v)| {
                v.strip_prefix("Err(\"")
                    .map(|e| e.trim_end_matches("\")").to_owned())
            })
            .collect()
    }
}

/// One call's outcome: its events with block numbers made relative to its
/// block (so chains at different heights compare equal), or its task-market
/// error (or `BadOrigin`).
type Step = Result<Vec<MarketEvent>, String>;

fn relative(inc: &Inclusion) -> Vec<MarketEvent> {
    let n = inc.block.number;
    inc.events
        .iter()
        .cloned()
        .map(|e| match e {
            MarketEvent::TaskCreated {
                task_id,
                requester,
                escrow,
                deadline,
                lane,
                priority,
                model_requirements,
            } => MarketEvent::TaskCreated {
                task_id,
                requester,
                escrow,
                deadline: deadline - n,
                lane,
                priority,
                model_requirements,
            },
            MarketEvent::TaskSubmitted {
                task_id,
                executor,
                output_cid,
                attestation_cid,
                verification_deadline,
                required_quorum,
            } => MarketEvent::TaskSubmitted {
                task_id,
                executor,
                output_cid,
                attestation_cid,
                verification_deadline: verification_deadline - n,
                required_quorum,
            },
            other => other,
        })
        .collect()
}

async fn call<S>(who: &S, call: MarketCall) -> (Step, Option<Inclusion>)
where
    S: Service<MarketCall, Response = Pooled, Error = SubmitError> + Clone,
{
    match who.clone().submit(call).await {
        Ok(inc) => (Ok(relative(&inc)), Some(inc)),
        Err(e) => (
            Err(match (&e, e.market_error()) {
                (_, Some(m)) => format!("{m:?}"),
                (
                    SubmitError::Dispatch {
                        error: DispatchError::BadOrigin,
                        ..
                    },
                    None,
                ) => "BadOrigin".to_owned(),
                _ => format!("not a task-market error: {e}"),
            }),
            None,
        ),
    }
}

/// Runs a call and records its outcome under `what`.
async fn step<S>(t: &mut Transcript, what: &str, who: &S, c: MarketCall) -> Option<Inclusion>
where
    S: Service<MarketCall, Response = Pooled, Error = SubmitError> + Clone,
{
    let (step, inc) = call(who, c).await;
    t.record(what, step);
    inc
}

fn create(lane: Lane, model: &str) -> MarketCall {
    create_with(lane, model, Priority::Normal, 500, UNIT)
}

fn create_with(
    lane: Lane,
    model: &str,
    priority: Priority,
    deadline: u32,
    escrow: u128,
) -> MarketCall {
    MarketCall::CreateTaskIntent {
        lane,
        priority,
        model_requirements: model.as_bytes().to_vec(),
        input_cid: INPUT.to_vec(),
        compute_budget: 5,
        deadline_blocks: deadline,
        escrow_amount: escrow,
    }
}

fn submit(task_id: TaskId, attestation_cid: Option<&[u8]>) -> MarketCall {
    MarketCall::SubmitResult {
        task_id,
        output_cid: OUTPUT.to_vec(),
        attestation_cid: attestation_cid.map(<[u8]>::to_vec),
    }
}

fn attest(task_id: TaskId, score: u8) -> MarketCall {
    MarketCall::SubmitAttestation {
        task_id,
        score,
        attestation_cid: None,
    }
}

fn fail(task_id: TaskId, reason: FailReason) -> MarketCall {
    MarketCall::FailTask { task_id, reason }
}

fn assign(task_id: TaskId) -> MarketCall {
    MarketCall::AcceptAssignment { task_id }
}

/// Creates a task as Alice (recorded) and returns its id.
async fn created<C: Chain>(t: &mut Transcript, c: &C, what: &str, call: MarketCall) -> TaskId {
    let inc = step(t, what, &c.signer(ALICE), call).await;
    created_task_id(&inc.expect("created").events).expect("a TaskCreated event")
}

/// Creates a Lane 1 task and has it assigned (to Bob, the only executor of
/// the development genesis).
async fn assigned<C: Chain>(t: &mut Transcript, c: &C, what: &str) -> TaskId {
    let id = created(
        t,
        c,
        &format!("{what}: create"),
        create(Lane::Lane1, "sha256"),
    )
    .await;
    step(t, &format!("{what}: assign"), &c.signer(ALICE), assign(id)).await;
    id
}

// ---- the scenarios ------------------------------------------------------------

/// A lifecycle to verified, and the errors of each call met on the way.
async fn lifecycle_and_call_errors<C: Chain>(c: &C) -> Transcript {
    let mut t = Transcript::default();
    let (alice, bob, charlie, dave, eve) = (
        c.signer(ALICE),
        c.signer(BOB),
        c.signer(CHARLIE),
        c.signer(DAVE),
        c.signer(EVE),
    );
    let before = c.reserved(ALICE).await;
    let id = created(&mut t, c, "create", create(Lane::Lane1, "sha256")).await;
    t.record("escrow reserved", c.reserved(ALICE).await - before);
    step(
        &mut t,
        "create for the wrong lane",
        &alice,
        create(Lane::Lane0, "sha256"),
    )
    .await;
    step(
        &mut t,
        "create for an unknown model",
        &alice,
        create(Lane::Lane1, "no-such-model"),
    )
    .await;
    step(
        &mut t,
        "create with a zero deadline",
        &alice,
        create_with(Lane::Lane1, "sha256", Priority::Normal, 0, UNIT),
    )
    .await;
    step(
        &mut t,
        "create without escrow",
        &alice,
        create_with(Lane::Lane1, "sha256", Priority::Normal, 500, 0),
    )
    .await;
    step(
        &mut t,
        "create with an escrow above the balance",
        &charlie,
        create_with(Lane::Lane1, "sha256", Priority::Normal, 500, u128::MAX / 2),
    )
    .await;
    step(
        &mut t,
        "start before assignment",
        &bob,
        MarketCall::StartTask { task_id: id },
    )
    .await;
    step(&mut t, "submit while open", &bob, submit(id, None)).await;
    step(
        &mut t,
        "fail an open task as a stranger",
        &charlie,
        fail(id, FailReason::Other),
    )
    .await;
    step(
        &mut t,
        "assign an unknown task",
        &alice,
        assign(TaskId(9_999)),
    )
    .await;
    step(&mut t, "assign", &alice, assign(id)).await;
    step(&mut t, "assign again", &alice, assign(id)).await;
    step(
        &mut t,
        "start by a stranger",
        &charlie,
        MarketCall::StartTask { task_id: id },
    )
    .await;
    step(&mut t, "start", &bob, MarketCall::StartTask { task_id: id }).await;
    step(
        &mut t,
        "start again",
        &bob,
        MarketCall::StartTask { task_id: id },
    )
    .await;
    step(&mut t, "submit by a stranger", &charlie, submit(id, None)).await;
    step(
        &mut t,
        "fail another's task",
        &charlie,
        fail(id, FailReason::Other),
    )
    .await;
    step(&mut t, "attest before submission", &dave, attest(id, 70)).await;
    step(
        &mut t,
        "submit with an empty attestation cid",
        &bob,
        submit(id, Some(b"")),
    )
    .await;
    step(&mut t, "submit", &bob, submit(id, None)).await;
    step(&mut t, "submit again", &bob, submit(id, None)).await;
    step(&mut t, "attest by a stranger", &charlie, attest(id, 90)).await;
    step(
        &mut t,
        "attest to an unknown task",
        &dave,
        attest(TaskId(9_999), 50),
    )
    .await;
    step(
        &mut t,
        "attest with a score over 100",
        &dave,
        attest(id, 101),
    )
    .await;
    step(
        &mut t,
        "attest with an empty attestation cid",
        &dave,
        MarketCall::SubmitAttestation {
            task_id: id,
            score: 70,
            attestation_cid: Some(Vec::new()),
        },
    )
    .await;
    step(
        &mut t,
        "finalize while verification is pending",
        &charlie,
        MarketCall::FinalizeTask { task_id: id },
    )
    .await;
    step(&mut t, "attest", &dave, attest(id, 80)).await;
    step(&mut t, "attest twice", &dave, attest(id, 80)).await;
    step(&mut t, "attest to quorum", &eve, attest(id, 91)).await;
    t.record("escrow settled", c.reserved(ALICE).await - before);
    step(
        &mut t,
        "finalize a verified task",
        &charlie,
        MarketCall::FinalizeTask { task_id: id },
    )
    .await;
    step(
        &mut t,
        "fail a verified task",
        &bob,
        fail(id, FailReason::Other),
    )
    .await;
    step(
        &mut t,
        "register a renderer without root",
        &alice,
        MarketCall::RegisterRenderer {
            renderer_id: b"my-renderer".to_vec(),
            lane: Lane::Lane1,
            deterministic: true,
            max_latency_ms: 100,
            vram_required_mb: 1_000,
        },
    )
    .await;
    t.record("status", c.status(id).await);
    t
}

/// `fail_task`: who may fail a task when, what it refunds, and which
/// reasons slash the executor — by whoever sends them.
async fn failing_refunds_and_slashes<C: Chain>(c: &C) -> Transcript {
    let mut t = Transcript::default();
    let (alice, bob) = (c.signer(ALICE), c.signer(BOB));
    let before = c.reserved(ALICE).await;
    let stake = c.stake(BOB).await;

    let open = created(&mut t, c, "create", create(Lane::Lane1, "sha256")).await;
    step(
        &mut t,
        "the requester cancels an open task",
        &alice,
        fail(open, FailReason::Cancelled),
    )
    .await;
    t.record("escrow after cancel", c.reserved(ALICE).await - before);

    let a = assigned(&mut t, c, "a").await;
    step(
        &mut t,
        "the executor fails with Other",
        &bob,
        fail(a, FailReason::Other),
    )
    .await;
    t.record("slashed for Other", stake - c.stake(BOB).await);

    let b = assigned(&mut t, c, "b").await;
    step(
        &mut t,
        "the executor fails with InvalidInput",
        &bob,
        fail(b, FailReason::InvalidInput),
    )
    .await;
    t.record("slashed for InvalidInput", stake - c.stake(BOB).await);

    let d = assigned(&mut t, c, "d").await;
    step(
        &mut t,
        "the executor fails with ExecutorFailed",
        &bob,
        fail(d, FailReason::ExecutorFailed),
    )
    .await;
    t.record(
        "slashed by its own ExecutorFailed",
        stake - c.stake(BOB).await,
    );

    let e = assigned(&mut t, c, "e").await;
    step(
        &mut t,
        "the requester fails with Preempted",
        &alice,
        fail(e, FailReason::Preempted),
    )
    .await;
    t.record(
        "slashed by the requester's Preempted",
        stake - c.stake(BOB).await,
    );
    step(
        &mut t,
        "fail a failed task",
        &bob,
        fail(e, FailReason::Other),
    )
    .await;
    t.record("escrow after all", c.reserved(ALICE).await - before);
    t
}

/// The preemption hook fails assigned Lane 1 work while Lane 0 work is
/// open, and slashes its executor as a `fail_task(Preempted)` would.
async fn hook_preemption<C: Chain>(c: &C) -> Transcript {
    let mut t = Transcript::default();
    let (alice, bob) = (c.signer(ALICE), c.signer(BOB));
    let stake = c.stake(BOB).await;
    let id = assigned(&mut t, c, "lane 1").await;
    step(&mut t, "start", &bob, MarketCall::StartTask { task_id: id }).await;
    let lane0 = created(
        &mut t,
        c,
        "create lane 0",
        create(Lane::Lane0, "video-render"),
    )
    .await;
    let waiting = created(
        &mut t,
        c,
        "create lane 1 while lane 0 is open",
        create(Lane::Lane1, "sha256"),
    )
    .await;
    step(
        &mut t,
        "assign while lane 0 is open",
        &alice,
        assign(waiting),
    )
    .await;
    c.new_blocks(1).await;
    t.record("status after the hook", c.status(id).await);
    t.record("slashed by the hook", stake - c.stake(BOB).await);
    step(&mut t, "submit after preemption", &bob, submit(id, None)).await;
    step(
        &mut t,
        "lane 0 submit before assignment",
        &bob,
        submit(lane0, None),
    )
    .await;
    step(&mut t, "assign lane 0", &alice, assign(lane0)).await;
    step(
        &mut t,
        "lane 0 submit without an attestation",
        &bob,
        submit(lane0, None),
    )
    .await;
    step(
        &mut t,
        "lane 0 submit with an empty attestation",
        &bob,
        submit(lane0, Some(b"")),
    )
    .await;
    step(&mut t, "lane 0 submit", &bob, submit(lane0, Some(OUTPUT))).await;
    step(&mut t, "lane 0 attest", &c.signer(DAVE), attest(lane0, 90)).await;
    step(
        &mut t,
        "lane 0 attest to quorum",
        &c.signer(EVE),
        attest(lane0, 90),
    )
    .await;
    step(
        &mut t,
        "assign lane 1 once lane 0 is settled",
        &alice,
        assign(waiting),
    )
    .await;
    step(
        &mut t,
        "tidy up",
        &alice,
        fail(waiting, FailReason::Cancelled),
    )
    .await;
    t
}

/// Rejections slash: a low average score, and a verification deadline that
/// passes without quorum — whose block belongs to the hook.
async fn rejections<C: Chain>(c: &C) -> Transcript {
    let mut t = Transcript::default();
    let (bob, charlie, dave, eve) = (
        c.signer(BOB),
        c.signer(CHARLIE),
        c.signer(DAVE),
        c.signer(EVE),
    );
    let stake = c.stake(BOB).await;
    let before = c.reserved(ALICE).await;

    let low = assigned(&mut t, c, "low").await;
    step(&mut t, "low: submit", &bob, submit(low, None)).await;
    step(&mut t, "low: attest 40", &dave, attest(low, 40)).await;
    step(&mut t, "low: attest 50", &eve, attest(low, 50)).await;
    t.record("low: slashed", stake - c.stake(BOB).await);
    t.record("low: escrow refunded", c.reserved(ALICE).await - before);

    let late = assigned(&mut t, c, "late").await;
    let inc = step(&mut t, "late: submit", &bob, submit(late, None))
        .await
        .expect("submitted");
    let deadline = inc
        .events
        .iter()
        .find_map(|e| match e {
            MarketEvent::TaskSubmitted {
                verification_deadline,
                ..
            } => Some(*verification_deadline),
            _ => None,
        })
        .expect("TaskSubmitted");
    // Up to two blocks before the deadline: the next call lands in the
    // block before it, the one after in the deadline block itself.
    c.until_block(deadline - 2).await;
    step(
        &mut t,
        "late: attest the block before the deadline",
        &dave,
        attest(late, 90),
    )
    .await;
    step(
        &mut t,
        "late: attest in the deadline block",
        &eve,
        attest(late, 90),
    )
    .await;
    t.record("late: status", c.status(late).await);
    t.record("late: slashed", stake - c.stake(BOB).await);
    step(
        &mut t,
        "late: finalize after the deadline",
        &charlie,
        MarketCall::FinalizeTask { task_id: late },
    )
    .await;
    t.record("escrow after both", c.reserved(ALICE).await - before);
    t
}

/// Open queues are kept in priority order: High, Normal, Low; within a
/// priority the earlier deadline; then arrival.
async fn open_queue_order<C: Chain>(c: &C) -> Transcript {
    let mut t = Transcript::default();
    let mut ids = BTreeMap::new();
    for (name, priority, deadline) in [
        ("low", Priority::Low, 300),
        ("normal late", Priority::Normal, 400),
        ("high", Priority::High, 450),
        ("normal early", Priority::Normal, 350),
        ("normal early, second", Priority::Normal, 350),
    ] {
        let id = created(
            &mut t,
            c,
            name,
            create_with(Lane::Lane1, "sha256", priority, deadline, UNIT),
        )
        .await;
        ids.insert(id, name);
    }
    let order: Vec<&str> = c
        .open_lane1()
        .await
        .into_iter()
        .filter_map(|id| ids.get(&id).copied())
        .collect();
    t.record("order", &order);
    for id in ids.keys() {
        step(
            &mut t,
            "cancel",
            &c.signer(ALICE),
            fail(*id, FailReason::Cancelled),
        )
        .await;
    }
    t
}

/// An open task expires in the block whose number is its deadline.
async fn expiry<C: Chain>(c: &C) -> Transcript {
    let mut t = Transcript::default();
    let before = c.reserved(ALICE).await;
    let id = created(
        &mut t,
        c,
        "create with a deadline two blocks on",
        create_with(Lane::Lane1, "sha256", Priority::Normal, 2, UNIT),
    )
    .await;
    c.new_blocks(1).await;
    t.record("status the block before", c.status(id).await);
    step(
        &mut t,
        "assign in the deadline block",
        &c.signer(ALICE),
        assign(id),
    )
    .await;
    t.record("status", c.status(id).await);
    t.record("escrow refunded", c.reserved(ALICE).await - before);
    step(
        &mut t,
        "start an expired task",
        &c.signer(BOB),
        MarketCall::StartTask { task_id: id },
    )
    .await;
    t
}

/// Renderers are registered and removed by root, with the full event.
async fn renderer_registry<C: Chain>(c: &C) -> Transcript {
    let mut t = Transcript::default();
    let root = c.root();
    let register = |id: &str, lane, deterministic, max_latency_ms, vram_required_mb| {
        MarketCall::RegisterRenderer {
            renderer_id: id.as_bytes().to_vec(),
            lane,
            deterministic,
            max_latency_ms,
            vram_required_mb,
        }
    };
    step(
        &mut t,
        "register",
        &root,
        register("my-model", Lane::Lane1, false, 90_000, 2_000),
    )
    .await;
    step(
        &mut t,
        "register again",
        &root,
        register("my-model", Lane::Lane1, true, 1, 1),
    )
    .await;
    step(
        &mut t,
        "register an empty id",
        &root,
        register("", Lane::Lane1, true, 1, 1),
    )
    .await;
    step(
        &mut t,
        "a lane 0 renderer must be deterministic",
        &root,
        register("v", Lane::Lane0, false, 1, 1),
    )
    .await;
    step(
        &mut t,
        "lane 0 latency over the limit",
        &root,
        register("v", Lane::Lane0, true, 15_001, 1),
    )
    .await;
    step(
        &mut t,
        "lane 1 latency over the limit",
        &root,
        register("v", Lane::Lane1, true, 120_001, 1),
    )
    .await;
    step(
        &mut t,
        "vram over the limit",
        &root,
        register("v", Lane::Lane1, true, 1, 11_501),
    )
    .await;
    step(
        &mut t,
        "deregister an unknown renderer",
        &root,
        MarketCall::DeregisterRenderer {
            renderer_id: b"nope".to_vec(),
        },
    )
    .await;
    // Root signs as Alice here: Charlie makes the signed calls.
    let charlie = c.signer(CHARLIE);
    step(
        &mut t,
        "deregister without root",
        &charlie,
        MarketCall::DeregisterRenderer {
            renderer_id: b"my-model".to_vec(),
        },
    )
    .await;
    step(
        &mut t,
        "create for the new model",
        &charlie,
        create(Lane::Lane1, "my-model"),
    )
    .await;
    step(
        &mut t,
        "deregister",
        &root,
        MarketCall::DeregisterRenderer {
            renderer_id: b"my-model".to_vec(),
        },
    )
    .await;
    step(
        &mut t,
        "create for a removed model",
        &charlie,
        create(Lane::Lane1, "my-model"),
    )
    .await;
    t
}

/// Runs every scenario on `chain`, in order, on one chain.
async fn all<C: Chain>(chain: &C) -> Vec<(&'static str, Transcript)> {
    vec![
        (
            "lifecycle and call errors",
            lifecycle_and_call_errors(chain).await,
        ),
        (
            "failing, refunds and slashes",
            failing_refunds_and_slashes(chain).await,
        ),
        ("hook preemption", hook_preemption(chain).await),
        ("rejections", rejections(chain).await),
        ("open queue order", open_queue_order(chain).await),
        ("expiry", expiry(chain).await),
        ("renderer registry", renderer_registry(chain).await),
    ]
}

fn ok_events(t: &Transcript, what: &str) -> bool {
    t.get(what).starts_with("Ok(")
}

/// The scenarios on the embedded dev chain.
async fn on_the_dev_chain() -> Vec<(&'static str, Transcript)> {
    let dev = Dev(DevChain::new(DevConfig {
        auto_attest: None,
        ..DevConfig::default()
    })
    .expect("dev chain"));
    all(&dev).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_chain_and_the_runtime_follow_the_same_rules() {
    let embedded = on_the_dev_chain().await;
    let node = support::chopsticks().await;
    let real = Real::on(&node.url, Backend::Legacy, Blocks::OnRequest).await;
    let runtime = all(&real).await;
    same_rules(&embedded, &runtime, &real);
}

/// The scenarios on the parachain flavour under polkadot-omni-node (a block
/// a second, each final at once), through `backend`, against the embedded
/// dev chain's.
async fn on_the_real_node(test: &str, backend: Backend) {
    let Some(node) = support::omni_node(test, "nsn-dev-para-spec.json", 1_000).await else {
        return;
    };
    let embedded = on_the_dev_chain().await;
    let real = Real::on(&node.url, backend, Blocks::Timed).await;
    let runtime = all(&real).await;
    same_rules(&embedded, &runtime, &real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_node_the_runtime_follows_the_same_rules_through_the_legacy_backend() {
    on_the_real_node(
        "on_a_real_node_the_runtime_follows_the_same_rules_through_the_legacy_backend",
        Backend::Legacy,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_node_the_runtime_follows_the_same_rules_through_the_default_backend() {
    on_the_real_node(
        "on_a_real_node_the_runtime_follows_the_same_rules_through_the_default_backend",
        Backend::Default,
    )
    .await;
}

/// The transcripts are equal step by step, and each scenario shows what it
/// is about.
fn same_rules(
    embedded: &[(&'static str, Transcript)],
    runtime: &[(&'static str, Transcript)],
    real: &Real,
) {
    for ((scenario, a), (_, b)) in embedded.iter().zip(runtime) {
        for ((what, x), (what_b, y)) in a.steps.iter().zip(&b.steps) {
            assert_eq!(what, what_b, "{scenario}: the steps line up");
            assert_eq!(x, y, "{scenario}: {what}: embedded dev chain vs runtime");
        }
        assert_eq!(a.steps.len(), b.steps.len(), "{scenario}: as many steps");
    }
    assert_eq!(real.0.decode_failures(), 0, "every event decoded whole");

    // What each scenario is about (equal on both, so checked once).
    let s: BTreeMap<&str, &Transcript> = runtime.iter().map(|(n, t)| (*n, t)).collect();
    let five = format!("{}", 5 * UNIT);

    let life = s["lifecycle and call errors"];
    assert_eq!(life.get("escrow reserved"), format!("{UNIT}"));
    assert_eq!(life.get("escrow settled"), "0");
    assert_eq!(life.get("status"), "Some(Verified)");
    for (what, error) in [
        ("create for the wrong lane", "RendererLaneMismatch"),
        ("create for an unknown model", "RendererNotRegistered"),
        ("create with a zero deadline", "InvalidDeadline"),
        ("create without escrow", "InsufficientEscrow"),
        (
            "create with an escrow above the balance",
            "InsufficientBalance",
        ),
        // Status errors are TaskNotAssigned broadly, and an assignment of a
        // task that is no longer open is TaskNotOpen (the deployed pallet).
        ("start before assignment", "TaskNotAssigned"),
        ("submit while open", "TaskNotAssigned"),
        ("fail an open task as a stranger", "NotRequester"),
        ("assign an unknown task", "TaskNotFound"),
        ("assign again", "TaskNotOpen"),
        ("start by a stranger", "NotExecutor"),
        ("start again", "TaskNotAssigned"),
        ("submit by a stranger", "NotExecutor"),
        ("fail another's task", "NotExecutor"),
        ("attest before submission", "TaskNotSubmitted"),
        // Refused on Lane 1 too (the deployed pallet).
        (
            "submit with an empty attestation cid",
            "InvalidAttestationCid",
        ),
        ("submit again", "TaskNotAssigned"),
        ("attest by a stranger", "NotValidator"),
        ("attest to an unknown task", "TaskNotFound"),
        ("attest with a score over 100", "InvalidAttestationScore"),
        (
            "attest with an empty attestation cid",
            "InvalidAttestationCid",
        ),
        (
            "finalize while verification is pending",
            "VerificationPending",
        ),
        ("attest twice", "DuplicateAttestation"),
        ("finalize a verified task", "TaskNotSubmitted"),
        ("fail a verified task", "TaskNotAssigned"),
        ("register a renderer without root", "BadOrigin"),
    ] {
        assert_eq!(life.get(what), format!("Err({error:?})"), "{what}");
    }
    assert!(life.get("attest to quorum").contains("TaskVerified"));

    let failing = s["failing, refunds and slashes"];
    assert!(
        failing
            .get("the requester cancels an open task")
            .contains("Cancelled")
    );
    assert_eq!(failing.get("escrow after cancel"), "0");
    assert_eq!(failing.get("slashed for Other"), "0");
    assert_eq!(failing.get("slashed for InvalidInput"), "0");
    assert_eq!(failing.get("slashed by its own ExecutorFailed"), five);
    assert_eq!(
        failing.get("slashed by the requester's Preempted"),
        format!("{}", 10 * UNIT)
    );
    assert_eq!(
        failing.get("fail a failed task"),
        "Err(\"TaskNotAssigned\")"
    );
    assert_eq!(failing.get("escrow after all"), "0");

    let hook = s["hook preemption"];
    assert_eq!(
        hook.get("assign while lane 0 is open"),
        "Err(\"Lane0Priority\")"
    );
    assert_eq!(hook.get("status after the hook"), "Some(Failed)");
    // The hook slashes, as the deployed pallet's does.
    assert_eq!(hook.get("slashed by the hook"), five);
    assert_eq!(
        hook.get("submit after preemption"),
        "Err(\"TaskNotAssigned\")"
    );
    assert_eq!(
        hook.get("lane 0 submit without an attestation"),
        "Err(\"MissingAttestation\")"
    );
    assert_eq!(
        hook.get("lane 0 submit with an empty attestation"),
        "Err(\"InvalidAttestationCid\")"
    );
    assert!(ok_events(hook, "lane 0 submit"));
    assert!(hook.get("lane 0 attest to quorum").contains("TaskVerified"));
    assert!(ok_events(hook, "assign lane 1 once lane 0 is settled"));

    let rej = s["rejections"];
    assert!(rej.get("low: attest 50").contains("TaskRejected"));
    // A low score slashes (VerificationFailureSlash).
    assert_eq!(rej.get("low: slashed"), five);
    assert_eq!(rej.get("low: escrow refunded"), "0");
    assert!(ok_events(rej, "late: attest the block before the deadline"));
    // The hook rejects in the deadline block, before its extrinsics.
    assert_eq!(
        rej.get("late: attest in the deadline block"),
        "Err(\"TaskNotSubmitted\")"
    );
    assert_eq!(rej.get("late: status"), "Some(Rejected)");
    assert_eq!(rej.get("late: slashed"), format!("{}", 10 * UNIT));
    assert_eq!(rej.get("escrow after both"), "0");

    // High, then Normal by deadline then arrival, then Low.
    assert_eq!(
        s["open queue order"].get("order"),
        "[\"high\", \"normal early\", \"normal early, second\", \"normal late\", \"low\"]"
    );

    let exp = s["expiry"];
    assert_eq!(exp.get("status the block before"), "Some(Open)");
    assert_eq!(
        exp.get("assign in the deadline block"),
        "Err(\"TaskNotOpen\")"
    );
    assert_eq!(exp.get("status"), "Some(Expired)");
    assert_eq!(exp.get("escrow refunded"), "0");
    assert_eq!(exp.get("start an expired task"), "Err(\"TaskNotAssigned\")");

    let reg = s["renderer registry"];
    assert_eq!(
        reg.get("register"),
        format!(
            "{:?}",
            Step::Ok(vec![MarketEvent::RendererRegistered {
                renderer_id: b"my-model".to_vec(),
                lane: Lane::Lane1,
                deterministic: false,
                max_latency_ms: 90_000,
                vram_required_mb: 2_000,
            }])
        ),
        "the whole event"
    );
    for (what, error) in [
        ("register again", "RendererAlreadyRegistered"),
        ("register an empty id", "InvalidRendererId"),
        (
            "a lane 0 renderer must be deterministic",
            "RendererNotDeterministic",
        ),
        ("lane 0 latency over the limit", "RendererLatencyExceeded"),
        ("lane 1 latency over the limit", "RendererLatencyExceeded"),
        ("vram over the limit", "RendererVramExceeded"),
        ("deregister an unknown renderer", "RendererNotRegistered"),
        ("deregister without root", "BadOrigin"),
        ("create for a removed model", "RendererNotRegistered"),
    ] {
        assert_eq!(reg.get(what), format!("Err({error:?})"), "{what}");
    }
    assert!(ok_events(reg, "create for the new model"));

    // The error variants the suite reaches on both chains.
    let reached: std::collections::BTreeSet<String> =
        runtime.iter().flat_map(|(_, t)| t.errors()).collect();
    let expected = [
        "BadOrigin",
        "DuplicateAttestation",
        "InsufficientBalance",
        "InsufficientEscrow",
        "InvalidAttestationCid",
        "InvalidAttestationScore",
        "InvalidDeadline",
        "InvalidRendererId",
        "Lane0Priority",
        "MissingAttestation",
        "NotExecutor",
        "NotRequester",
        "NotValidator",
        "RendererAlreadyRegistered",
        "RendererLaneMismatch",
        "RendererLatencyExceeded",
        "RendererNotDeterministic",
        "RendererNotRegistered",
        "RendererVramExceeded",
        "TaskNotAssigned",
        "TaskNotFound",
        "TaskNotOpen",
        "TaskNotSubmitted",
        "VerificationPending",
    ];
    assert_eq!(
        reached,
        expected.iter().map(|s| (*s).to_owned()).collect(),
        "errors reached"
    );
}

/// The draw's subject is a fixed string, so every assignment in one block
/// goes to the same executor. On three executors (the `multi-executor`
/// genesis), a burst of assignments goes into one block built by hand, and
/// they all share one executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_in_one_block_go_to_one_executor() {
    /// Pools all `calls` (each accepted before the next is sent), builds one
    /// block, and returns their inclusions.
    async fn in_one_block<S, F>(
        who: &S,
        calls: Vec<MarketCall>,
        new_block: impl Fn() -> F,
    ) -> Vec<Inclusion>
    where
        S: Service<MarketCall, Response = Pooled, Error = SubmitError> + Clone,
        F: std::future::Future<Output = ()>,
    {
        let mut pooled = Vec::new();
        for call in calls {
            pooled.push(who.clone().oneshot(call).await.expect("pooled"));
        }
        new_block().await;
        let mut included = Vec::new();
        for p in pooled {
            included.push(p.await.expect("included"));
        }
        included
    }
    async fn burst<S, F>(
        alice: &S,
        n: usize,
        new_block: impl Fn() -> F,
    ) -> BTreeMap<u32, Vec<AccountId>>
    where
        S: Service<MarketCall, Response = Pooled, Error = SubmitError> + Clone,
        F: std::future::Future<Output = ()>,
    {
        let created = in_one_block(
            alice,
            (0..n).map(|_| create(Lane::Lane1, "sha256")).collect(),
            &new_block,
        )
        .await;
        let ids: Vec<TaskId> = created
            .iter()
            .map(|inc| created_task_id(&inc.events).expect("created"))
            .collect();
        let assigned = in_one_block(alice, ids.into_iter().map(assign).collect(), &new_block).await;
        let mut by_block: BTreeMap<u32, Vec<AccountId>> = BTreeMap::new();
        for inc in assigned {
            for e in &inc.events {
                if let MarketEvent::TaskAssigned { executor, .. } = e {
                    by_block
                        .entry(inc.block.number)
                        .or_default()
                        .push(*executor);
                }
            }
        }
        by_block
    }
    fn check(name: &str, by_block: &BTreeMap<u32, Vec<AccountId>>, n: usize) {
        assert_eq!(by_block.len(), 1, "{name}: one block: {by_block:?}");
        let executors = by_block.values().next().expect("a block");
        assert_eq!(executors.len(), n, "{name}: every task assigned");
        assert!(
            executors.iter().all(|e| *e == executors[0]),
            "{name}: one block, several executors: {executors:?}"
        );
    }

    let mut genesis = DevGenesis::development();
    for who in [CHARLIE, AccountId::FERDIE] {
        genesis
            .executors
            .push((who, 100 * UNIT, vec![Lane::Lane0, Lane::Lane1]));
    }
    let dev = DevChain::new(DevConfig {
        genesis,
        block_mode: BlockMode::Manual,
        auto_attest: None,
        max_pool: 1024,
        finality_lag: None,
    })
    .expect("dev chain");
    let dev_blocks = burst(&dev.submitter(ALICE), 12, || {
        dev.produce_block();
        std::future::ready(())
    })
    .await;
    check("embedded", &dev_blocks, 12);

    let node = support::chopsticks_with("Manual", "nsn-dev-spec-multi.json").await;
    let real = Real::on(&node.url, Backend::Legacy, Blocks::OnRequest).await;
    let real_blocks = burst(&real.signer(ALICE), 12, || real.new_blocks(1)).await;
    check("runtime", &real_blocks, 12);
}
