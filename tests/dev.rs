//! `nsn-lane1 dev` as a library call: the dev chain, the reference sidecar and
//! the node together, with nothing lost.
#![cfg(feature = "dev")]

use std::time::Duration;

use nsn_lane1::dev::{DevOptions, run_dev};
use nsn_lane1::executor::ExecutorConfig;
use nsn_lane1::task::FailReason;

/// A dev run that must end, successfully, within `secs`.
async fn run_within(opts: DevOptions, secs: u64) -> nsn_lane1::dev::DevSummary {
    tokio::time::timeout(
        Duration::from_secs(secs),
        run_dev(opts, std::future::pending()),
    )
    .await
    .expect("dev run finished in time")
    .expect("dev run succeeded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_all_end_verified_or_failed_with_a_reason() {
    let opts = DevOptions {
        tasks: Some(1000),
        executor: ExecutorConfig {
            max_concurrent: 8,
            ..ExecutorConfig::default()
        },
        ..DevOptions::default()
    };
    let summary = run_within(opts, 240).await;
    assert_eq!(summary.created, 1000);
    assert_eq!(summary.assigned, 1000);
    assert_eq!(summary.resolved(), 1000, "{summary:?}");
    assert_eq!(summary.verified, 1000, "no model in the default mix fails");
    assert_eq!(summary.executor.submitted, 1000);
    assert_eq!(summary.executor.errors, 0);
    assert_eq!(summary.latencies.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane0_bursts_preempt_and_every_task_still_ends() {
    let opts = DevOptions {
        tasks: Some(60),
        lane0_every: Some(10),
        models: vec!["sleep".into(), "sha256".into()],
        executor: ExecutorConfig {
            max_concurrent: 4,
            ..ExecutorConfig::default()
        },
        ..DevOptions::default()
    };
    let summary = run_within(opts, 120).await;
    assert_eq!(summary.resolved(), 60, "{summary:?}");
    assert!(summary.lane0 >= 5, "{summary:?}");
    // Every failure has a reason, and the only reason here is preemption;
    // each preempted task was posted again and its re-post verified.
    for (reason, n) in &summary.failed {
        assert_eq!(
            *reason,
            FailReason::Preempted,
            "{n} tasks failed with {reason:?}"
        );
    }
    assert_eq!(summary.reposted, summary.preempted());
    assert_eq!(summary.created, 60 + summary.reposted);
    assert_eq!(summary.verified, 60, "{summary:?}");
}

#[tokio::test]
async fn an_unknown_model_is_refused_up_front() {
    let opts = DevOptions {
        tasks: Some(1),
        models: vec!["llama-70b".into()],
        ..DevOptions::default()
    };
    let err = run_dev(opts, std::future::pending()).await.unwrap_err();
    assert_eq!(err.to_string(), "no such model: llama-70b");
}

/// With a block time, Lane 0 bursts do not stall the requester: it asks
/// for assignments in batches once Lane 0 work is settled, not one block
/// per refused task per post (which took about 480 blocks for 30 tasks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane0_bursts_at_a_block_time_make_progress() {
    let opts = DevOptions {
        tasks: Some(30),
        lane0_every: Some(10),
        block_time: Some(Duration::from_millis(50)),
        models: vec!["sha256".into()],
        executor: ExecutorConfig {
            max_concurrent: 2,
            ..ExecutorConfig::default()
        },
        ..DevOptions::default()
    };
    let summary = run_within(opts, 60).await;
    assert_eq!(summary.resolved(), 30, "{summary:?}");
    assert_eq!(summary.verified, 30, "{summary:?}");
    assert_eq!(summary.lane0, 2, "{summary:?}");
    assert!(
        summary.blocks <= 150,
        "{} blocks for 30 tasks",
        summary.blocks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_and_none_runs_a_task_another_ran() {
    let opts = DevOptions {
        tasks: Some(60),
        lane0_every: Some(10),
        nodes: 3,
        models: vec!["sha256".into(), "sleep".into()],
        executor: ExecutorConfig {
            max_concurrent: 2,
            ..ExecutorConfig::default()
        },
        ..DevOptions::default()
    };
    let summary = run_within(opts, 120).await;
    assert_eq!(summary.verified, 60, "{summary:?}");
    assert_eq!(summary.nodes.len(), 3);
    let working = summary
        .nodes
        .iter()
        .filter(|n| n.report.submitted > 0)
        .count();
    assert!(
        working >= 2,
        "the chain spread the work: {:?}",
        summary.nodes
    );
    // Each verified Lane 1 task was submitted by exactly one node.
    assert_eq!(
        summary
            .nodes
            .iter()
            .map(|n| n.report.submitted)
            .sum::<u64>(),
        60,
        "{:?}",
        summary.nodes
    );
    // Counted from the chain's extrinsics, not the nodes' reports.
    assert_eq!(summary.started_twice, 0);
    for n in &summary.nodes {
        assert_eq!(n.own_slashes, 0, "{n:?}");
    }
}

#[tokio::test]
async fn more_nodes_than_accounts_is_refused_up_front() {
    let opts = DevOptions {
        tasks: Some(1),
        nodes: 4,
        ..DevOptions::default()
    };
    let err = run_dev(opts, std::future::pending()).await.unwrap_err();
    assert_eq!(err.to_string(), "the demo runs 1 to 3 nodes, not 4");
}
