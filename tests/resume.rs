//! Nothing is lost across a restart or a lost chain connection: a node
//! backfills from its checkpoint, and the listener reopens the block stream
//! where it stopped.
#![cfg(feature = "dev")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use nsn_lane1::chain::dev::DevChain;
use nsn_lane1::chain::{BlockHash, BlockRef, BlockStream, ChainError, ChainPort, TaskIntent};
use nsn_lane1::checkpoint::Checkpoint;
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::lifecycle::TaskOutcome;
use nsn_lane1::listener::{ChainListener, TaskEvent};
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::task::{AccountId, BlockNumber, Lane, TaskId, TaskStatus};
use support::{TestSidecar, chain, chain_status, create, created_id, ok, within};

/// A Lane 1 `sha256` task whose input is in the sidecar's store.
fn task_for(sidecar: &TestSidecar, input: &[u8]) -> nsn_lane1::chain::MarketCall {
    let cid = sidecar.sidecar.store().put(input.to_vec()).expect("store");
    let mut call = create(Lane::Lane1, "sha256");
    if let nsn_lane1::chain::MarketCall::CreateTaskIntent { input_cid, .. } = &mut call {
        *input_cid = cid.as_bytes().to_vec();
    }
    call
}

/// A node for Bob that claims candidates, keeping `checkpoint` if given.
fn node(chain: &DevChain, sidecar: &TestSidecar, checkpoint: Option<&Checkpoint>) -> Node {
    node_with(
        ExecutorConfig {
            claim_assignments: true,
            ..ExecutorConfig::default()
        },
        chain,
        sidecar,
        checkpoint,
    )
}

/// A node for Bob with `config`, keeping `checkpoint` if given.
fn node_with(
    config: ExecutorConfig,
    chain: &DevChain,
    sidecar: &TestSidecar,
    checkpoint: Option<&Checkpoint>,
) -> Node {
    Node::spawn(
        config,
        NodeParts {
            checkpoint: checkpoint.cloned(),
            ..NodeParts::dev(chain, AccountId::BOB, sidecar.client())
        },
    )
}

/// A checkpoint in a file of its own for test `name`, none recorded yet.
fn fresh_checkpoint(name: &str) -> Checkpoint {
    let dir = std::env::temp_dir().join(format!("nsn-lane1-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = Checkpoint::new(dir.join("last-block"));
    let _ = std::fs::remove_file(checkpoint.path());
    checkpoint
}

/// A first run of Bob's node with `checkpoint`: a candidate is claimed and
/// run, and the node stops. Returns the block it recorded.
async fn first_run(chain: &DevChain, sidecar: &TestSidecar, checkpoint: &Checkpoint) -> u32 {
    let first = node(chain, sidecar, Some(checkpoint));
    within("first node follows", first.following()).await;
    let alice = chain.submitter(AccountId::ALICE);
    let id = created_id(&ok(&alice, task_for(sidecar, b"before")).await);
    let outcome = within("first task", first.board.wait_done(id)).await;
    assert!(
        matches!(outcome, TaskOutcome::Submitted { .. }),
        "{outcome:?}"
    );
    first.stop().await.expect("stops");
    let saved = checkpoint
        .load()
        .expect("readable")
        .expect("a block was recorded");
    assert!(saved >= 1);
    saved
}

#[tokio::test]
async fn a_restarted_node_backfills_the_blocks_it_missed_from_its_checkpoint() {
    let chain = chain();
    let sidecar = TestSidecar::start();
    let checkpoint = fresh_checkpoint("resume");
    let alice = chain.submitter(AccountId::ALICE);
    let saved = first_run(&chain, &sidecar, &checkpoint).await;

    // While the node is down a candidate appears. Only its `TaskCreated`
    // event says so (it is open, not assigned: start-up reconciliation does
    // not see it), so only a backfill can find it.
    let missed = ok(&alice, task_for(&sidecar, b"while down")).await;
    let missed_id = created_id(&missed);
    assert!(missed.block.number > saved);

    let second = node(&chain, &sidecar, Some(&checkpoint));
    let from = within("second node follows", second.following())
        .await
        .expect("follows");
    assert_eq!(from, saved + 1, "resumes after the recorded block");
    let outcome = within("missed task", second.board.wait_done(missed_id)).await;
    assert!(
        matches!(outcome, TaskOutcome::Submitted { .. }),
        "{outcome:?}"
    );
    assert_eq!(chain_status(&chain, missed_id), TaskStatus::Submitted);
    second.stop().await.expect("stops");
    assert!(checkpoint.load().unwrap().unwrap() >= missed.block.number);
}

/// A node away for longer than the chain node keeps state (a full node
/// prunes all but 256 blocks) cannot read the events of the blocks it
/// missed. It skips them, resumes at the finalized head from the chain's
/// state, and runs the task assigned to it meanwhile — instead of retrying
/// the pruned block for ever.
#[tokio::test]
async fn a_node_back_after_the_chain_pruned_the_blocks_it_missed_resumes_from_state() {
    let chain = chain();
    let sidecar = TestSidecar::start();
    let checkpoint = fresh_checkpoint("pruned");
    let alice = chain.submitter(AccountId::ALICE);
    let saved = first_run(&chain, &sidecar, &checkpoint).await;

    // While the node is down: a task is created and assigned to it, an
    // open candidate appears, many blocks pass, and the chain node prunes
    // the state of all but the last few.
    let assigned = created_id(&ok(&alice, task_for(&sidecar, b"assigned while down")).await);
    ok(
        &alice,
        nsn_lane1::chain::MarketCall::AcceptAssignment { task_id: assigned },
    )
    .await;
    let open = created_id(&ok(&alice, task_for(&sidecar, b"open while down")).await);
    chain.produce_blocks(20);
    let head = chain.finalized_head().await.expect("head").number;
    chain.prune_below(head - 4);
    assert!(
        saved + 1 < head - 4,
        "the blocks after the checkpoint are pruned"
    );

    let second = node(&chain, &sidecar, Some(&checkpoint));
    for id in [assigned, open] {
        let outcome = within("task after the gap", second.board.wait_done(id)).await;
        assert!(
            matches!(outcome, TaskOutcome::Submitted { .. }),
            "{id}: {outcome:?}"
        );
    }
    let scrape = second.metrics.registry.render();
    let skipped: u64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("lane1_chain_skipped_blocks_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the skipped blocks' counter");
    assert!(skipped >= 1, "the skip is counted: {skipped}");
    second.stop().await.expect("stops");
    assert!(
        checkpoint.load().unwrap().unwrap() >= head,
        "the checkpoint moves past the pruned blocks"
    );
    assert_eq!(support::own_slashes(&chain, AccountId::BOB), 0);
}

#[tokio::test]
async fn candidates_posted_before_a_first_start_are_claimed() {
    let chain = chain();
    let sidecar = TestSidecar::start();
    let alice = chain.submitter(AccountId::ALICE);
    // Posted before any node runs: no event will announce them again.
    let early = created_id(&ok(&alice, task_for(&sidecar, b"early")).await);
    let node = node(&chain, &sidecar, None);
    let outcome = within("early task", node.board.wait_done(early)).await;
    assert!(
        matches!(outcome, TaskOutcome::Submitted { .. }),
        "{outcome:?}"
    );
    assert_eq!(chain_status(&chain, early), TaskStatus::Submitted);
    node.stop().await.expect("stops");
}

#[tokio::test]
async fn a_corrupt_checkpoint_stops_the_node_instead_of_starting_from_zero() {
    let chain = chain();
    let sidecar = TestSidecar::start();
    let dir = std::env::temp_dir().join(format!("nsn-lane1-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = Checkpoint::new(dir.join("last-block"));
    std::fs::write(checkpoint.path(), "not a number").unwrap();
    let node = node(&chain, &sidecar, Some(&checkpoint));
    assert_eq!(within("listener gives up", node.following()).await, None);
    within("executor ends", async {
        while !node.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The dev chain, with a block stream that fails once with a connection
/// error after its first block (as a dropped WebSocket does) unless `failed`
/// starts true, and, with `best_from`, best blocks that trail finality
/// (replayed from that block, as a slow best-block subscription delivers
/// them).
#[derive(Clone)]
struct FlakyPort {
    chain: DevChain,
    failed: Arc<AtomicBool>,
    opened_from: Arc<std::sync::Mutex<Vec<Option<BlockNumber>>>>,
    best_from: Option<BlockNumber>,
}

impl Streams for FlakyPort {
    fn finalized(&self, from: Option<BlockNumber>) -> BlockStream {
        self.opened_from.lock().unwrap().push(from);
        let inner = self.chain.finalized_blocks(from);
        if self.failed.swap(true, Ordering::SeqCst) {
            return inner;
        }
        let lost =
            futures::stream::once(async { Err(ChainError::Connection("connection reset".into())) });
        Box::pin(inner.take(1).chain(lost))
    }
    fn best(&self, from: Option<BlockNumber>) -> BlockStream {
        self.chain.best_blocks(self.best_from.or(from))
    }
    fn chain(&self) -> &DevChain {
        &self.chain
    }
}

/// How a test port delivers blocks; its reads go to the dev chain as they
/// are ([`Shaped`] makes it a `ChainPort`).
trait Streams: Clone + Send + Sync + 'static {
    fn finalized(&self, from: Option<BlockNumber>) -> BlockStream;
    fn best(&self, from: Option<BlockNumber>) -> BlockStream;
    fn chain(&self) -> &DevChain;
}

/// A `ChainPort` whose block streams are shaped by `S`.
#[derive(Clone)]
struct Shaped<S>(S);

impl<S: Streams> ChainPort for Shaped<S> {
    fn finalized_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        self.0.finalized(from)
    }
    fn best_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        self.0.best(from)
    }
    async fn best_head(&self) -> Result<BlockRef, ChainError> {
        self.0.chain().best_head().await
    }
    async fn finalized_head(&self) -> Result<BlockRef, ChainError> {
        self.0.chain().finalized_head().await
    }
    async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        self.0.chain().task(at, id).await
    }
    async fn assigned_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.0.chain().assigned_lane1_tasks(at).await
    }
    async fn open_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.0.chain().open_lane1_tasks(at).await
    }
    async fn open_lane0_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.0.chain().open_lane0_tasks(at).await
    }
    async fn account_nonce(&self, account: AccountId) -> Result<u64, ChainError> {
        self.0.chain().account_nonce(account).await
    }
    async fn account_nonce_at(&self, at: BlockHash, account: AccountId) -> Result<u64, ChainError> {
        self.0.chain().account_nonce_at(at, account).await
    }
}

#[tokio::test]
async fn the_listener_reopens_the_stream_after_a_lost_connection_and_skips_nothing() {
    let chain = chain();
    let alice = chain.submitter(AccountId::ALICE);
    let port = FlakyPort {
        chain: chain.clone(),
        failed: Arc::default(),
        opened_from: Arc::default(),
        best_from: None,
    };
    let start = chain.finalized_head().await.unwrap().number + 1;
    let a = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    let b = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    let c = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);

    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let listener = ChainListener::new(
        Shaped(port.clone()),
        AccountId::BOB,
        None,
        tx,
        Default::default(),
    );
    let run = tokio::spawn(listener.run(Some(start)));
    let mut created = Vec::new();
    let mut blocks = Vec::new();
    within("three candidates", async {
        while created.len() < 3 {
            match rx.recv().await.expect("listener runs") {
                TaskEvent::Created { task_id, .. } => created.push(task_id),
                TaskEvent::BlockDone { number } => blocks.push(number),
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(created, vec![a, b, c], "each candidate once, in order");
    let gapless: Vec<_> = (start..start + blocks.len() as u32).collect();
    assert_eq!(blocks, gapless, "every block once");
    let opened = port.opened_from.lock().unwrap().clone();
    assert_eq!(
        opened,
        vec![Some(start), Some(start + 1)],
        "reopened at the next block"
    );
    run.abort();
}

#[tokio::test]
async fn a_best_block_behind_finality_does_not_reopen_settled_lane0_work() {
    let chain = chain();
    let alice = chain.submitter(AccountId::ALICE);
    let start = chain.finalized_head().await.unwrap().number + 1;
    let mut lane0 = create(Lane::Lane0, nsn_lane1::chain::dev::DEV_LANE0_MODEL);
    if let nsn_lane1::chain::MarketCall::CreateTaskIntent { priority, .. } = &mut lane0 {
        *priority = nsn_lane1::task::Priority::High;
    }
    let l0 = created_id(&ok(&alice, lane0).await);
    ok(
        &alice,
        nsn_lane1::chain::MarketCall::AcceptAssignment { task_id: l0 },
    )
    .await;
    let settled_at = chain.finalized_head().await.unwrap().number;

    // Finalized blocks are caught up on before the best blocks that made
    // them, which arrive late.
    let port = FlakyPort {
        chain: chain.clone(),
        failed: Arc::new(AtomicBool::new(true)),
        opened_from: Arc::default(),
        best_from: Some(start),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let listener = ChainListener::new(Shaped(port), AccountId::BOB, None, tx, Default::default());
    let run = tokio::spawn(listener.run(Some(start)));
    // Lane 0 events for `l0` until the listener is done with `until`.
    let mut lane0_events = Vec::new();
    let mut follow = async |until: BlockNumber| {
        within("the listener reaches the block", async {
            loop {
                match rx.recv().await.expect("listener runs") {
                    TaskEvent::Lane0Arrived { task_id } if task_id == l0 => {
                        lane0_events.push("arrived")
                    }
                    TaskEvent::Lane0Settled { task_id } if task_id == l0 => {
                        lane0_events.push("settled")
                    }
                    TaskEvent::BlockDone { number } if number == until => break,
                    _ => {}
                }
            }
        })
        .await;
    };
    follow(settled_at).await;
    // The late best blocks come once finality is caught up on; another
    // block after them. A hint taken from a best block that is already
    // final would report the settled work open again, and hold Lane 1
    // until a later block — which an idle chain may never make.
    ok(&alice, create(Lane::Lane1, "sha256")).await;
    follow(settled_at + 1).await;
    assert_eq!(
        lane0_events,
        ["arrived", "settled"],
        "announced once, settled once"
    );
    run.abort();
}

/// A node killed while its `start_task` is still in the pool (the run
/// begins as soon as the start is pooled) leaves that transaction behind;
/// no block shows it yet. The restarted node waits until the account's
/// earlier transactions have landed (its pool nonce reached by the chain's)
/// before deciding what to send, so it does not send its own. The case of a
/// start already in a best block is in `tests/stake.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_and_restarted_from_its_checkpoint_loses_nothing_and_sends_nothing_twice()
 {
    killed_mid_run_and_restarted(nsn_lane1::sidecar::server::Semantics::Reference).await;
}

/// Against a sidecar with NSN's semantics the run id of the killed node's
/// run is spent (`ALREADY_EXISTS` for good, and its status has no output
/// CID): the restarted node runs the task under the next attempt's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_against_nsn_semantics_runs_a_new_attempt_after_the_restart() {
    killed_mid_run_and_restarted(nsn_lane1::sidecar::server::Semantics::Nsn).await;
}

async fn killed_mid_run_and_restarted(semantics: nsn_lane1::sidecar::server::Semantics) {
    use nsn_lane1::chain::dev::BlockMode;
    use support::{calls_on_chain, own_slashes, within_secs};
    // Real timing: 50 ms blocks, finality two blocks behind; validators
    // attest.
    let chain = support::chain_with(|c| {
        c.block_mode = BlockMode::Interval(std::time::Duration::from_millis(50));
        c.finality_lag = Some(2);
        c.auto_attest = Some(90);
    });
    let sidecar = TestSidecar::start();
    sidecar.sidecar.set_semantics(semantics);
    let dir = std::env::temp_dir().join(format!(
        "nsn-lane1-kill-{}-{semantics:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = Checkpoint::new(dir.join("last-block"));
    let _ = std::fs::remove_file(checkpoint.path());
    let alice = chain.submitter(AccountId::ALICE);
    let config = ExecutorConfig {
        claim_assignments: true,
        model_parameters: [(
            nsn_lane1::task::ModelId::new("sleep").unwrap(),
            nsn_lane1::sidecar::client::Parameters::json(&serde_json::json!({"duration_ms": 300})),
        )]
        .into_iter()
        .collect(),
        ..ExecutorConfig::default()
    };
    let spawn = || node_with(config.clone(), &chain, &sidecar, Some(&checkpoint));
    let first = spawn();
    within("first node follows", first.following()).await;
    let mut ids = Vec::new();
    for i in 0..4u8 {
        let cid = sidecar.sidecar.store().put(vec![i]).unwrap();
        ids.push(created_id(
            &ok(&alice, support::lane1_task("sleep", &cid)).await,
        ));
    }
    // Killed while a model runs at the sidecar: the fault happened.
    within(
        "a run at the sidecar",
        sidecar.sidecar.wait_for(
            &ids[0].to_string(),
            nsn_lane1::sidecar::server::RunState::Running,
        ),
    )
    .await;
    first.kill().await;
    assert_ne!(
        chain_status(&chain, ids[3]),
        TaskStatus::Verified,
        "work was left when the node died"
    );

    let mut blocks = chain.finalized_blocks(None);
    let second = spawn();
    let mut verified = std::collections::HashSet::new();
    within_secs(60, async {
        while verified.len() < ids.len() {
            let Some(Ok(block)) = blocks.next().await else {
                panic!("the chain stopped");
            };
            for r in block.events.iter() {
                if let nsn_lane1::chain::MarketEvent::TaskVerified { task_id, .. } = r.event
                    && ids.contains(&task_id)
                {
                    verified.insert(task_id);
                }
            }
        }
    })
    .await;
    // Counted from the chain's record: every call once per task, no slash.
    for id in &ids {
        for call in ["start_task", "submit_result"] {
            assert_eq!(
                calls_on_chain(&chain, AccountId::BOB, call, *id),
                1,
                "task {id}: {call}"
            );
        }
        assert_eq!(calls_on_chain(&chain, AccountId::BOB, "fail_task", *id), 0);
    }
    assert_eq!(own_slashes(&chain, AccountId::BOB), 0);
    if semantics == nsn_lane1::sidecar::server::Semantics::Nsn {
        // The killed node's run id was spent: the task ran again under the
        // next.
        let runs = sidecar.sidecar.runs_of(ids[0]);
        assert!(runs.len() >= 2, "{runs:?}");
    }
    second.stop().await.expect("stops");
    chain.shutdown();
}

/// One key, one signer: a second `nsn-lane1 run` with the state file
/// another process holds is refused at once, before it connects to
/// anything, with a message that says so.
#[tokio::test]
async fn a_second_process_on_the_same_state_file_is_refused() {
    let dir = std::env::temp_dir().join(format!("nsn-lane1-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("lane1.block");
    let key = dir.join("lane1.key");
    support::write_key_file(&key, "//Bob\n");
    // The first signer: this process holds the state file.
    let _first = Checkpoint::new(&state).lock().expect("the first hold");
    let out = within(
        "the second process to stop",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_nsn-lane1"))
            .args(["run", "--chain", "ws://127.0.0.1:9", "--key-file"])
            .arg(&key)
            .arg("--state-file")
            .arg(&state)
            .env("NSN_LANE1_TELEMETRY_LISTEN", "127.0.0.1:0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(
        stderr.contains(&std::process::id().to_string()),
        "names the holder: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dev chain as a node reaches it, every block it delivers passed
/// through `filter` first (an event lost on its way, a block that does not
/// decode); reads go to the chain as they are.
#[derive(Clone)]
struct FilteredPort {
    chain: DevChain,
    filter: Arc<
        dyn Fn(nsn_lane1::chain::Block) -> Result<nsn_lane1::chain::Block, ChainError>
            + Send
            + Sync,
    >,
}

impl Streams for FilteredPort {
    fn finalized(&self, from: Option<BlockNumber>) -> BlockStream {
        let filter = self.filter.clone();
        Box::pin(self.chain.finalized_blocks(from).map(move |b| filter(b?)))
    }
    fn best(&self, from: Option<BlockNumber>) -> BlockStream {
        let filter = self.filter.clone();
        Box::pin(self.chain.best_blocks(from).map(move |b| filter(b?)))
    }
    fn chain(&self) -> &DevChain {
        &self.chain
    }
}

/// A task whose `TaskAssigned` the node never heard of is found by the
/// reconciliation at finality, run and verified — not left assigned for the
/// chain's preemption hook to slash at the next Lane 0 burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_assignment_the_node_never_heard_of_is_found_and_verified() {
    use support::{calls_on_chain, own_slashes};
    let chain = support::chain_with(support::timed);
    let sidecar = TestSidecar::start();
    // The node never hears of the assignment of a task in `blind`.
    let blind: Arc<std::sync::Mutex<std::collections::HashSet<TaskId>>> = Arc::default();
    let hidden = blind.clone();
    let port = FilteredPort {
        chain: chain.clone(),
        filter: Arc::new(move |mut block| {
            let hidden = hidden.lock().unwrap().clone();
            let events: Vec<_> = block
                .events
                .iter()
                .filter(|r| {
                    !matches!(r.event, nsn_lane1::chain::MarketEvent::TaskAssigned { task_id, .. } if hidden.contains(&task_id))
                })
                .cloned()
                .collect();
            block.events = events.into();
            Ok(block)
        }),
    };
    let node = Node::spawn(
        ExecutorConfig::default(),
        NodeParts::new(
            Shaped(port.clone()),
            chain.submitter(AccountId::BOB),
            AccountId::BOB,
            sidecar.client(),
        ),
    );
    within("the node follows", node.following()).await;
    let alice = chain.submitter(AccountId::ALICE);
    let id = created_id(&ok(&alice, task_for(&sidecar, b"lost")).await);
    blind.lock().unwrap().insert(id);
    let assigned = ok(
        &alice,
        nsn_lane1::chain::MarketCall::AcceptAssignment { task_id: id },
    )
    .await;
    assert!(
        assigned
            .events
            .iter()
            .any(|e| matches!(e, nsn_lane1::chain::MarketEvent::TaskAssigned { task_id, .. } if *task_id == id)),
        "assigned on chain; the node's view of that event is lost"
    );
    support::until_verified(&chain, id, 30).await;
    assert_eq!(calls_on_chain(&chain, AccountId::BOB, "start_task", id), 1);
    assert_eq!(
        calls_on_chain(&chain, AccountId::BOB, "submit_result", id),
        1
    );
    assert_eq!(own_slashes(&chain, AccountId::BOB), 0);
    node.stop().await.expect("stops");
}

/// A block the node cannot decode stops its progress, loudly: the
/// checkpoint does not move past it, the node reports not ready and counts
/// it; once the blocks read again (the node upgraded), nothing was skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_block_stops_progress_loudly_and_skips_nothing() {
    use nsn_lane1::admission::NotReady;
    let chain = support::chain_with(support::timed);
    let sidecar = TestSidecar::start();
    let dir = std::env::temp_dir().join(format!("nsn-lane1-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = Checkpoint::new(dir.join("last-block"));
    let _ = std::fs::remove_file(checkpoint.path());
    // A runtime upgrade the node does not know: from block `from` on,
    // while `unreadable` is set, blocks do not decode.
    let from = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
    let unreadable = Arc::new(AtomicBool::new(false));
    let (upgraded_from, still_unreadable) = (from.clone(), unreadable.clone());
    let port = FilteredPort {
        chain: chain.clone(),
        filter: Arc::new(move |block| {
            if still_unreadable.load(Ordering::SeqCst)
                && block.number >= upgraded_from.load(Ordering::SeqCst)
            {
                return Err(ChainError::Decode {
                    what: format!("the events of block {}", block.number),
                    reason: "NsnTaskMarket::TaskAssigned: not enough data".into(),
                });
            }
            Ok(block)
        }),
    };
    let metrics = nsn_lane1::telemetry::metrics::Lane1Metrics::default();
    let node = Node::spawn(
        ExecutorConfig::default(),
        NodeParts::new(
            Shaped(port.clone()),
            chain.submitter(AccountId::BOB),
            AccountId::BOB,
            sidecar.client(),
        )
        .metrics(metrics.clone())
        .checkpoint(checkpoint.clone()),
    );
    within("the node follows", node.following()).await;
    // The upgrade: from the next block on, nothing decodes.
    let upgrade = chain.finalized_head().await.unwrap().number + 1;
    from.store(upgrade, Ordering::SeqCst);
    unreadable.store(true, Ordering::SeqCst);
    let alice = chain.submitter(AccountId::ALICE);
    let id = created_id(&ok(&alice, task_for(&sidecar, b"after the upgrade")).await);
    ok(
        &alice,
        nsn_lane1::chain::MarketCall::AcceptAssignment { task_id: id },
    )
    .await;
    within("not ready", async {
        while !matches!(
            node.admission.readiness(),
            Err(NotReady::ChainUnreadable(_))
        ) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let scrape = metrics.registry.render();
    assert!(
        !scrape.contains("lane1_chain_decode_errors_total 0"),
        "counted: {scrape}"
    );
    // Blocks go on being made; the node does not go past the upgrade.
    let mut finalized = chain.finalized_blocks(None);
    within("the chain to move on", async {
        while let Some(Ok(block)) = finalized.next().await {
            if block.number >= upgrade + 5 {
                return;
            }
        }
    })
    .await;
    let recorded = checkpoint.load().unwrap().unwrap_or(0);
    assert!(
        recorded < upgrade,
        "checkpoint held at {recorded}, below {upgrade}"
    );
    assert_eq!(
        support::calls_on_chain(&chain, AccountId::BOB, "start_task", id),
        0,
        "the task assigned in an unread block was not run blind"
    );
    // The node reads the chain again: the task assigned meanwhile is found
    // and verified, and the node is ready.
    unreadable.store(false, Ordering::SeqCst);
    support::until_verified(&chain, id, 30).await;
    assert!(node.admission.readiness().is_ok());
    node.stop().await.expect("stops");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The dev chain, but the first `Tasks(id)` read after `armed` fails as a
/// lost connection: the cut comes while the listener handles a block.
#[derive(Clone)]
struct CutMidBlock {
    chain: DevChain,
    armed: Arc<AtomicBool>,
}

impl ChainPort for CutMidBlock {
    fn finalized_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        self.chain.finalized_blocks(from)
    }
    fn best_blocks(&self, from: Option<BlockNumber>) -> BlockStream {
        self.chain.best_blocks(from)
    }
    async fn best_head(&self) -> Result<BlockRef, ChainError> {
        self.chain.best_head().await
    }
    async fn finalized_head(&self) -> Result<BlockRef, ChainError> {
        self.chain.finalized_head().await
    }
    async fn task(&self, at: BlockHash, id: TaskId) -> Result<Option<TaskIntent>, ChainError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(ChainError::Connection("connection reset mid-block".into()));
        }
        self.chain.task(at, id).await
    }
    async fn assigned_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.chain.assigned_lane1_tasks(at).await
    }
    async fn open_lane1_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.chain.open_lane1_tasks(at).await
    }
    async fn open_lane0_tasks(&self, at: BlockHash) -> Result<Vec<TaskId>, ChainError> {
        self.chain.open_lane0_tasks(at).await
    }
    async fn account_nonce(&self, account: AccountId) -> Result<u64, ChainError> {
        self.chain.account_nonce(account).await
    }
    async fn account_nonce_at(&self, at: BlockHash, account: AccountId) -> Result<u64, ChainError> {
        self.chain.account_nonce_at(at, account).await
    }
}

#[tokio::test]
async fn a_connection_lost_while_a_block_is_handled_is_waited_out_and_the_block_handled_again() {
    let chain = chain();
    let alice = chain.submitter(AccountId::ALICE);
    let port = CutMidBlock {
        chain: chain.clone(),
        armed: Arc::default(),
    };
    let start = chain.finalized_head().await.unwrap().number + 1;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (following_tx, mut following) = tokio::sync::watch::channel(None);
    let listener = ChainListener::new(port.clone(), AccountId::BOB, None, tx, Default::default())
        .report_following(following_tx);
    let run = tokio::spawn(listener.run(Some(start)));
    within(
        "the listener to follow",
        following.wait_for(Option::is_some),
    )
    .await
    .expect("following");
    // Past its start: the assignment's block makes the listener read
    // Tasks(id), and that read meets the cut.
    port.armed.store(true, Ordering::SeqCst);
    let id = created_id(&ok(&alice, create(Lane::Lane1, "sha256")).await);
    ok(
        &alice,
        nsn_lane1::chain::MarketCall::AcceptAssignment { task_id: id },
    )
    .await;
    within("the assignment, after the cut", async {
        loop {
            match rx.recv().await {
                Some(TaskEvent::AssignedToMe { task }) if task.id == id => return,
                Some(_) => {}
                None => panic!("the listener stopped: {:?}", run.is_finished()),
            }
        }
    })
    .await;
    assert!(!port.armed.load(Ordering::SeqCst), "the cut happened");
    assert!(!run.is_finished(), "the listener runs on");
    run.abort();
}
