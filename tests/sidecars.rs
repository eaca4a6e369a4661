//! One node, several sidecars (reference sidecars on loopback, sharing one
//! input store as they would share IPFS), on a dev chain with real timing:
//! work spreads, a dead sidecar's runs finish elsewhere, models go only
//! where they are served, a late sidecar joins, a warm one is preferred.
#![cfg(feature = "dev")]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use nsn_lane1::chain::dev::DevChain;
use nsn_lane1::chain::{MarketCall, MarketEvent};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::node::{Node, NodeParts};
use nsn_lane1::sidecar::client::Parameters;
use nsn_lane1::sidecar::server::Residency;
use nsn_lane1::sidecar::set::SidecarSet;
use nsn_lane1::sidecar::store::BlobStore;
use nsn_lane1::task::{AccountId, ModelId, TaskId};
use support::*;

/// Slots per sidecar.
const SLOTS: usize = 2;

struct Multi {
    chain: DevChain,
    store: BlobStore,
    sidecars: Vec<TestSidecar>,
    set: SidecarSet,
    node: Node,
}

fn config(sidecars: usize, sleep_ms: u64) -> ExecutorConfig {
    let mut config = ExecutorConfig {
        max_concurrent: SLOTS * sidecars,
        shutdown_grace: Duration::from_secs(5),
        ..ExecutorConfig::default()
    };
    config.model_parameters.insert(
        ModelId::new("sleep").expect("model id"),
        Parameters::json(&serde_json::json!({ "duration_ms": sleep_ms })),
    );
    config
}

impl Multi {
    /// `sidecars` reference sidecars, each set up by `setup` before the
    /// node starts; a node driving them all.
    fn start(sidecars: usize, sleep_ms: u64, setup: impl Fn(usize, &TestSidecar)) -> Self {
        let store = BlobStore::in_memory();
        let sidecars: Vec<TestSidecar> = (0..sidecars)
            .map(|_| TestSidecar::start_sharing(store.clone()))
            .collect();
        for (i, s) in sidecars.iter().enumerate() {
            setup(i, s);
        }
        let set = SidecarSet::new(sidecars.iter().map(|s| (s.client(), SLOTS)));
        let config = config(set.members().len(), sleep_ms);
        Self::spawn(store, sidecars, set, config)
    }

    fn spawn(
        store: BlobStore,
        sidecars: Vec<TestSidecar>,
        set: SidecarSet,
        config: ExecutorConfig,
    ) -> Self {
        let chain = chain_with(timed);
        let node = Node::spawn(config, NodeParts::dev(&chain, AccountId::BOB, set.clone()));
        Multi {
            chain,
            store,
            sidecars,
            set,
            node,
        }
    }

    /// Posts a Lane 1 task for `model` and has it assigned (to Bob).
    async fn post(&self, model: &str, n: u64) -> TaskId {
        let requester = self.chain.submitter(AccountId::ALICE);
        let input = self
            .store
            .put(format!("input {n}").into_bytes())
            .expect("store input");
        let created = ok(&requester, lane1_task(model, &input)).await;
        let id = created
            .events
            .iter()
            .find_map(|e| match e {
                MarketEvent::TaskCreated { task_id, .. } => Some(*task_id),
                _ => None,
            })
            .expect("TaskCreated");
        ok(&requester, MarketCall::AcceptAssignment { task_id: id }).await;
        id
    }

    /// The chain tasks sidecar `i` ran (any attempt).
    fn ran(&self, i: usize) -> HashSet<u64> {
        self.sidecars[i]
            .sidecar
            .run_history()
            .iter()
            .filter_map(|r| r.task_id.split('-').next()?.parse().ok())
            .collect()
    }

    /// `fail_task` calls of the node on chain.
    fn fail_calls(&self) -> usize {
        self.chain
            .extrinsics()
            .iter()
            .filter(|x| matches!(x.call, MarketCall::FailTask { .. }))
            .count()
    }

    async fn all_verified(&self, ids: &[TaskId], secs: u64) {
        for id in ids {
            until_verified(&self.chain, *id, secs).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_share_sixty_tasks_and_each_runs_some() {
    let m = Multi::start(3, 60, |_, _| {});
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(m.post("sleep", n).await);
    }
    m.all_verified(&ids, 60).await;
    let ran: Vec<HashSet<u64>> = (0..3).map(|i| m.ran(i)).collect();
    for (i, tasks) in ran.iter().enumerate() {
        assert!(!tasks.is_empty(), "sidecar {i} ran nothing: {ran:?}");
    }
    let all: HashSet<u64> = ran.iter().flatten().copied().collect();
    assert_eq!(all.len(), 60, "every task ran somewhere");
    // Operators see it per sidecar.
    let scrape = m.node.metrics.registry.render();
    for s in &m.sidecars {
        let runs = m.node.metrics.sidecar_runs.with(&[&s.endpoint()]).get();
        assert!(
            runs > 0,
            "lane1_sidecar_runs_total for {}: {scrape}",
            s.endpoint()
        );
        assert!(scrape.contains(&format!(
            "lane1_sidecar_up{{sidecar=\"{}\"}} 1",
            s.endpoint()
        )));
    }
    assert_eq!(m.fail_calls(), 0);
    m.node.stop().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_killed_mid_run_has_its_runs_finished_elsewhere_and_fails_nothing() {
    let mut m = Multi::start(3, 1_500, |_, _| {});
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(m.post("sleep", n).await);
    }
    // Wait until sidecar 0 runs something, then kill it.
    within_secs(20, m.sidecars[0].sidecar.wait_running()).await;
    let killed: HashSet<String> = m.sidecars[0].sidecar.running_ids().into_iter().collect();
    assert!(!killed.is_empty(), "sidecar 0 had a run to lose");
    m.sidecars[0].kill();
    m.all_verified(&ids, 60).await;
    // Every task it held ran again on another sidecar, and nothing failed.
    let elsewhere: HashSet<u64> = m.ran(1).union(&m.ran(2)).copied().collect();
    for run in &killed {
        let task: u64 = run
            .split('-')
            .next()
            .and_then(|t| t.parse().ok())
            .expect("a task id");
        assert!(elsewhere.contains(&task), "task {task} finished elsewhere");
    }
    assert_eq!(m.fail_calls(), 0);
    assert!(!m.set.members()[0].is_up(), "the dead sidecar left the set");
    assert!(
        m.node.metrics.registry.render().contains(&format!(
            "lane1_sidecar_up{{sidecar=\"{}\"}} 0",
            m.sidecars[0].endpoint()
        )),
        "and operators see it"
    );
    m.node.stop().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_does_not_serve_a_model_never_gets_it() {
    // Runs long enough to overlap: sidecar 1 fills its slots, and sidecar
    // 0, free, must still not get them.
    let m = Multi::start(2, 400, |i, s| {
        if i == 0 {
            s.sidecar.set_served(Some(&["noop"]));
        }
    });
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(m.post("sleep", n).await);
    }
    m.all_verified(&ids, 60).await;
    assert!(
        m.sidecars[1].sidecar.max_concurrent_runs() > SLOTS,
        "sidecar 1 was asked for more than its slots"
    );
    assert!(m.ran(0).is_empty(), "sidecar 0 does not serve sleep");
    assert_eq!(m.ran(1).len(), 12);
    assert_eq!(m.fail_calls(), 0);
    m.node.stop().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_that_starts_late_gets_work() {
    let store = BlobStore::in_memory();
    let first = TestSidecar::start_sharing(store.clone());
    // An address for the second, not served yet.
    let late_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let late_client = client_for(&format!("http://{late_addr}"));
    let set = SidecarSet::new([(first.client(), 1), (late_client, 1)]);
    let mut m = Multi::spawn(store.clone(), vec![first], set, config(2, 300));
    let early = m.post("sleep", 0).await;
    until_verified(&m.chain, early, 30).await;
    assert!(
        !m.set.members()[1].is_up(),
        "the late sidecar is out of the set"
    );
    let late = TestSidecar::start_serving(late_addr, Default::default(), store);
    m.sidecars.push(late);
    within_secs(10, async {
        while !m.set.members()[1].is_up() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut ids = Vec::new();
    for n in 1..9 {
        ids.push(m.post("sleep", n).await);
    }
    m.all_verified(&ids, 60).await;
    assert!(!m.ran(1).is_empty(), "the late sidecar got work");
    m.node.stop().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sidecar_is_preferred_over_a_cold_one() {
    let residency = Residency {
        load: Duration::from_millis(800),
        slots: 1,
    };
    let m = Multi::start(2, 20, |i, s| {
        s.sidecar.set_residency(Some(residency));
        assert!(s.sidecar.preload(if i == 0 { "noop" } else { "sleep" }));
    });
    // One at a time: each finds the warm sidecar with a free slot.
    for n in 0..5 {
        let id = m.post("sleep", n).await;
        until_verified(&m.chain, id, 30).await;
    }
    assert!(m.ran(0).is_empty(), "the cold sidecar got nothing");
    assert_eq!(m.ran(1).len(), 5);
    assert_eq!(
        (m.sidecars[0].sidecar.loads(), m.sidecars[1].sidecar.loads()),
        (0, 0),
        "no model was loaded for a run"
    );
    assert_eq!(
        m.set.members()[0].cold_runs() + m.set.members()[1].cold_runs(),
        0
    );
    m.node.stop().await.expect("node stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane0_work_takes_only_the_sidecars_that_serve_lane0() {
    let store = BlobStore::in_memory();
    let sidecars: Vec<TestSidecar> = (0..2)
        .map(|_| TestSidecar::start_sharing(store.clone()))
        .collect();
    // Sidecar 1 is not for Lane 0: its Lane 1 run goes on.
    let set = SidecarSet::new(sidecars.iter().map(|s| (s.client(), 1))).lane0_role(1, false);
    let m = Multi::spawn(store, sidecars, set, config(2, 2_000));
    let a = m.post("sleep", 0).await;
    let b = m.post("sleep", 1).await;
    within_secs(20, async {
        m.sidecars[0].sidecar.wait_running().await;
        m.sidecars[1].sidecar.wait_running().await;
    })
    .await;
    let on = |i: usize| m.sidecars[i].sidecar.running_ids()[0].clone();
    let (run0, run1) = (on(0), on(1));
    // Lane 0 work arrives (created and assigned at once, so that the
    // chain's own preemption hook does not see it open).
    // Task ids come in order: the next is b + 1. Both calls are pooled
    // together and land in one block.
    let requester = m.chain.submitter(AccountId::ALICE);
    let lane0 = TaskId(b.0 + 1);
    let created = send(
        &requester,
        create(nsn_lane1::task::Lane::Lane0, "video-render"),
    )
    .await;
    let assigned = send(&requester, MarketCall::AcceptAssignment { task_id: lane0 }).await;
    let created = created.await.expect("Lane 0 task created");
    assert!(
        created
            .events
            .iter()
            .any(|e| matches!(e, MarketEvent::TaskCreated { task_id, .. } if *task_id == lane0))
    );
    let assigned = assigned.await.expect("Lane 0 task assigned");
    assert_eq!(
        created.block, assigned.block,
        "one block: never open at a block's start"
    );
    within_secs(
        20,
        m.sidecars[0]
            .sidecar
            .wait_for(&run0, nsn_lane1::sidecar::server::RunState::Cancelled),
    )
    .await;
    m.all_verified(&[a, b], 60).await;
    // The run on sidecar 1 was never stopped: it ran once, to its end.
    let history = m.sidecars[1].sidecar.run_history();
    let ended: Vec<_> = history.iter().filter(|r| r.task_id == run1).collect();
    assert_eq!(ended.len(), 1, "{history:?}");
    assert_eq!(
        ended[0].state,
        nsn_lane1::sidecar::server::RunState::Completed
    );
    assert_eq!(m.fail_calls(), 0);
    m.node.stop().await.expect("node stops");
}
