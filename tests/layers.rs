//! Each layer with tower-test's mock service: readiness, wake-ups, paused
//! time, and what it does to dropped and failed calls. Plus a compile-only
//! check that the standard stack is a task service.
#![cfg(feature = "dev")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsn_lane1::chain::dev::{DevChain, DevSubmitter};
use nsn_lane1::layer::Canceller;
use nsn_lane1::layer::in_flight::InFlightLayer;
use nsn_lane1::layer::metrics::MetricsLayer;
use nsn_lane1::layer::preempt::{PreemptLayer, PreemptReason, Preempted, Preemptor};
use nsn_lane1::layer::retry::RetryPolicy;
use nsn_lane1::layer::timeout::{Elapsed, TimeoutLayer};
use nsn_lane1::lifecycle::TaskOutcome;
use nsn_lane1::sidecar::client::{Blame, Execute, ExecuteRequest, Parameters, SidecarError};
use nsn_lane1::stack::{DefaultClassifier, Lane1Stack};
use nsn_lane1::task::{AccountId, Cid, Lane, ModelId, Priority, RunId, Task, TaskId};
use nsn_lane1::telemetry::metrics::Lane1Metrics;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{BoxError, Service};
use tower_test::mock;

fn cid() -> Cid {
    Cid::parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").unwrap()
}

fn exec_req(id: u64, timeout: Option<Duration>) -> ExecuteRequest {
    ExecuteRequest {
        task_id: TaskId(id),
        lane: Lane::Lane1,
        model: ModelId::new("noop").unwrap(),
        input_cid: cid(),
        parameters: Parameters::none(),
        timeout,
        attempt: 0,
    }
}

fn task(id: u64, lane: Lane) -> Task {
    Task {
        id: TaskId(id),
        lane,
        priority: Priority::Normal,
        model: ModelId::new("noop").unwrap(),
        input_cid: cid(),
        deadline: 100,
        compute_budget: 0,
        escrow: 0,
        requester: AccountId::ALICE,
    }
}

/// A canceller that records what it was asked to cancel.
/// What a recording canceller was asked to cancel, and why.
type CancelLog = Arc<Mutex<Vec<(RunId, &'static str)>>>;

fn recording_canceller() -> (Canceller, CancelLog) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let canceller = Canceller::from_fn(move |id, reason| {
        seen.lock().unwrap().push((id, reason));
        async { Ok(()) }
    });
    (canceller, log)
}

fn error_is<E: std::error::Error + 'static>(e: &BoxError) -> Option<&E> {
    e.downcast_ref::<E>()
}

// ---- timeout -----------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn timeout_passes_readiness_through_and_wakes() {
    let (canceller, _) = recording_canceller();
    let (mut svc, mut handle) = mock::spawn_layer::<ExecuteRequest, (), _>(TimeoutLayer::new(
        Duration::from_secs(5),
        canceller,
    ));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert!(
        svc.is_woken(),
        "allowing a request wakes the waiting caller"
    );
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn timeout_writes_the_limit_into_the_request_and_cancels_on_expiry() {
    let (canceller, cancelled) = recording_canceller();
    let (mut svc, mut handle) = mock::spawn_layer::<ExecuteRequest, (), _>(TimeoutLayer::new(
        Duration::from_secs(5),
        canceller,
    ));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(exec_req(1, Some(Duration::from_secs(60)))));
    let (req, _respond) = handle.next_request().await.unwrap();
    assert_eq!(
        req.timeout,
        Some(Duration::from_secs(5)),
        "the shorter limit travels"
    );
    assert_pending!(fut.poll());
    // Past the limit but inside the grace period: still waiting for the sidecar.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(2)).await;
    let err = assert_ready!(fut.poll()).unwrap_err();
    let elapsed = error_is::<Elapsed>(&err).expect("Elapsed");
    assert_eq!(elapsed.task_id, TaskId(1));
    assert_eq!(elapsed.after, Duration::from_secs(5));
    assert!(elapsed.sidecar_confirmed);
    assert_eq!(
        *cancelled.lock().unwrap(),
        vec![(RunId::first(TaskId(1)), "execution timed out")]
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_keeps_a_ready_answer_and_maps_late_failures() {
    let (canceller, cancelled) = recording_canceller();
    let (mut svc, mut handle) = mock::spawn_layer::<ExecuteRequest, (), _>(TimeoutLayer::new(
        Duration::from_secs(5),
        canceller,
    ));
    handle.allow(2);
    assert_ready_ok!(svc.poll_ready());
    let mut ok = task::spawn(svc.call(exec_req(1, Some(Duration::from_secs(1)))));
    let (req, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        req.timeout,
        Some(Duration::from_secs(1)),
        "the request's own, shorter limit wins"
    );
    // The answer and the timer are both due: the answer is kept.
    tokio::time::advance(Duration::from_secs(10)).await;
    respond.send_response(());
    assert_ready_ok!(ok.poll());

    // A failure that arrives once the limit has passed keeps its own
    // identity: only the timer firing is `Elapsed` (the sidecar's own
    // timeout says so itself, and is attributed as the deadline by its
    // blame).
    assert_ready_ok!(svc.poll_ready());
    let mut late = task::spawn(svc.call(exec_req(2, None)));
    let (_, respond) = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    respond.send_error(SidecarError::Model {
        task_id: TaskId(2),
        message: "timed out after 5000 ms".into(),
        blame: Blame::Time,
    });
    let err = assert_ready!(late.poll()).unwrap_err();
    assert!(error_is::<Elapsed>(&err).is_none(), "{err}");
    assert!(
        matches!(
            error_is::<SidecarError>(&err),
            Some(SidecarError::Model {
                blame: Blame::Time,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(
        nsn_lane1::lifecycle::attribute(&err),
        nsn_lane1::lifecycle::Attribution::Fail(nsn_lane1::task::FailReason::DeadlineExceeded)
    );
    assert!(
        cancelled.lock().unwrap().is_empty(),
        "the sidecar stopped it already"
    );
}

// ---- preempt -------------------------------------------------------------

#[tokio::test]
async fn preempt_drops_the_call_cancels_the_sidecar_task_and_says_why() {
    let (canceller, cancelled) = recording_canceller();
    let preemptor = Preemptor::new();
    let (mut svc, mut handle) =
        mock::spawn_layer::<Task, (), _>(PreemptLayer::new(preemptor.clone(), canceller));
    handle.allow(3);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(task(1, Lane::Lane1)));
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(task(2, Lane::Lane0)));
    let _ra = handle.next_request().await.unwrap();
    let _rb = handle.next_request().await.unwrap();
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_eq!(preemptor.running(), vec![TaskId(1), TaskId(2)]);

    // Only Lane 1 yields.
    assert_eq!(
        preemptor.preempt_lane(Lane::Lane1, PreemptReason::Lane0),
        vec![TaskId(1)]
    );
    assert!(a.is_woken(), "the preempted call is woken");
    let err = assert_ready!(a.poll()).unwrap_err();
    let p = error_is::<Preempted>(&err).expect("Preempted");
    assert_eq!(
        (p.task_id, p.reason, p.sidecar_confirmed),
        (TaskId(1), PreemptReason::Lane0, true)
    );
    assert_eq!(
        *cancelled.lock().unwrap(),
        vec![(RunId::first(TaskId(1)), "preempted by lane 0 work")]
    );
    assert_pending!(b.poll());
    assert_eq!(
        preemptor.running(),
        vec![TaskId(2)],
        "a finished call unregisters"
    );

    // A call that already has its answer is not preempted.
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(task(3, Lane::Lane1)));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(());
    assert!(preemptor.preempt(TaskId(3), PreemptReason::Requested));
    assert_ready_ok!(c.poll());
    assert!(!preemptor.preempt(TaskId(99), PreemptReason::Requested));
    drop(b);
    assert!(preemptor.running().is_empty(), "a dropped call unregisters");
}

#[tokio::test]
async fn a_preempted_call_is_still_waited_for_and_only_a_real_answer_confirms_it() {
    // A canceller that never confirms by itself: only the calls' answers can.
    let canceller = Canceller::from_fn(|_, _| std::future::pending::<Result<(), BoxError>>())
        .with_stop_answers(|e| {
            e.downcast_ref::<SidecarError>()
                .is_some_and(|e| matches!(e, SidecarError::Cancelled { .. }))
        });
    let preemptor = Preemptor::new();
    let (mut svc, mut handle) =
        mock::spawn_layer::<Task, (), _>(PreemptLayer::new(preemptor.clone(), canceller));
    handle.allow(3);
    let mut call = |id| {
        assert_ready_ok!(svc.poll_ready());
        let mut fut = task::spawn(svc.call(task(id, Lane::Lane1)));
        assert_pending!(fut.poll());
        assert!(preemptor.preempt(TaskId(id), PreemptReason::Lane0));
        assert_pending!(fut.poll(), "the cancel waits for the call's answer");
        fut
    };

    // It finished as the cancel went out: its result stands.
    let mut finished = call(1);
    handle.next_request().await.unwrap().1.send_response(());
    assert_ready_ok!(finished.poll());

    // A broken connection proves nothing: still waiting.
    let mut broken = call(2);
    handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_error(SidecarError::Transport {
            task_id: Some(TaskId(2)),
            message: "connection reset".into(),
        });
    assert_pending!(broken.poll());

    // The run's own CANCELLED answer confirms it stopped.
    let mut cancelled = call(3);
    handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_error(SidecarError::Cancelled {
            task_id: TaskId(3),
            message: "cancelled".into(),
        });
    let err = assert_ready!(cancelled.poll()).unwrap_err();
    let p = error_is::<Preempted>(&err).expect("Preempted");
    assert_eq!((p.task_id, p.sidecar_confirmed), (TaskId(3), true));
}

// ---- metrics and in-flight ---------------------------------------------------

#[tokio::test]
async fn metrics_count_outcomes_including_dropped_calls() {
    let metrics = Lane1Metrics::default();
    let (mut svc, mut handle) = mock::spawn_layer::<Task, TaskOutcome, _>(MetricsLayer::new(
        metrics.clone(),
        DefaultClassifier,
    ));
    handle.allow(3);
    let count = |outcome: &str| metrics.tasks.with(&[outcome, "lane1", "noop"]).get();

    assert_ready_ok!(svc.poll_ready());
    let mut ok = task::spawn(svc.call(task(1, Lane::Lane1)));
    handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_response(TaskOutcome::NotOurs { task_id: TaskId(1) });
    assert_ready_ok!(ok.poll());

    assert_ready_ok!(svc.poll_ready());
    let mut failed = task::spawn(svc.call(task(2, Lane::Lane1)));
    handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_error(Preempted {
            task_id: TaskId(2),
            reason: PreemptReason::Lane0,
            sidecar_confirmed: true,
        });
    assert!(assert_ready!(failed.poll()).is_err());

    assert_ready_ok!(svc.poll_ready());
    let dropped = svc.call(task(3, Lane::Lane1));
    drop(dropped);

    assert_eq!(
        (count("not_ours"), count("preempted"), count("dropped")),
        (1, 1, 1)
    );
    let text = metrics.registry.render();
    assert!(
        text.contains(
            "lane1_task_duration_seconds_count{outcome=\"dropped\",lane=\"lane1\",model=\"noop\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn in_flight_gauge_follows_calls_and_drops() {
    let metrics = Lane1Metrics::default();
    let gauge = metrics.in_flight.with(&[]);
    let (mut svc, mut handle) = mock::spawn_layer::<Task, (), _>(InFlightLayer::new(gauge.clone()));
    handle.allow(2);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(task(1, Lane::Lane1)));
    assert_ready_ok!(svc.poll_ready());
    let b = svc.call(task(2, Lane::Lane1));
    assert_eq!(gauge.get(), 2);
    drop(b);
    assert_eq!(gauge.get(), 1);
    handle.next_request().await.unwrap().1.send_response(());
    assert_ready_ok!(a.poll());
    drop(a);
    assert_eq!(gauge.get(), 0);
}

// ---- retry -------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retry_retries_transient_errors_with_backoff_and_never_permanent_ones() {
    let policy = RetryPolicy::new(
        2,
        Duration::from_millis(100),
        Duration::from_secs(1),
        DefaultClassifier,
    );
    let (mut svc, mut handle) =
        mock::spawn_layer::<ExecuteRequest, (), _>(tower::retry::RetryLayer::new(policy));
    handle.allow(10);

    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(exec_req(1, None)));
    assert_pending!(fut.poll());
    let (_, r) = handle.next_request().await.unwrap();
    r.send_error(SidecarError::Transport {
        task_id: Some(TaskId(1)),
        message: "reset".into(),
    });
    assert_pending!(fut.poll());
    // The retry waits its backoff (50–100 ms for the first).
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_pending!(fut.poll());
    let (req, r) = handle.next_request().await.unwrap();
    assert_eq!(req.task_id, TaskId(1), "the same request is sent again");
    r.send_response(());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_ready_ok!(fut.poll());

    // A model failure is final: no second request.
    assert_ready_ok!(svc.poll_ready());
    let mut fut = task::spawn(svc.call(exec_req(2, None)));
    assert_pending!(fut.poll());
    let (_, r) = handle.next_request().await.unwrap();
    r.send_error(SidecarError::Model {
        task_id: TaskId(2),
        message: "bad".into(),
        blame: Blame::Model,
    });
    assert!(assert_ready!(fut.poll()).is_err());
    assert!(matches!(handle.poll_request(), std::task::Poll::Pending));
}

// ---- the whole stack -----------------------------------------------------------

#[test]
fn the_standard_stack_is_a_task_service() {
    // Compile-only: swapping a layer that changes the types breaks this test.
    fn assert_task_service<S>()
    where
        S: Service<Task, Response = TaskOutcome, Error = BoxError> + Send + 'static,
        S::Future: Send + 'static,
    {
    }
    assert_task_service::<Lane1Stack<Execute, DevSubmitter, DevChain>>();
}
