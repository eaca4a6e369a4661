//! The sidecar client against a real reference sidecar (tonic on
//! 127.0.0.1:0): success, failures, bad input, timeouts, cancellation, a
//! crash mid-call, recovery after a restart, health and capabilities.
#![cfg(feature = "dev")]

mod support;

use std::time::Duration;

use nsn_lane1::layer::Lane1ServiceBuilderExt;
use nsn_lane1::layer::preempt::{PreemptReason, Preempted, Preemptor};
use nsn_lane1::sidecar::client::{Blame, ExecuteRequest, Parameters, SidecarError, SidecarStatus};
use nsn_lane1::sidecar::proto;
use nsn_lane1::sidecar::proto::sidecar_client::SidecarClient as RawClient;
use nsn_lane1::sidecar::server::{RunState, Semantics, SetupFault};
use nsn_lane1::sidecar::store::BlobStore;
use nsn_lane1::task::{Cid, Lane, ModelId, TaskId};
use sha2::{Digest, Sha256};
use support::{TestSidecar, client_for, within};
use tower::ServiceExt;

fn request(id: u64, model: &str, input: &Cid, params: serde_json::Value) -> ExecuteRequest {
    ExecuteRequest {
        task_id: TaskId(id),
        lane: Lane::Lane1,
        model: ModelId::new(model).unwrap(),
        input_cid: input.clone(),
        parameters: if params.is_null() {
            Parameters::none()
        } else {
            Parameters::json(&params)
        },
        timeout: Some(Duration::from_secs(30)),
        attempt: 0,
    }
}

fn put(s: &TestSidecar, bytes: &[u8]) -> Cid {
    s.sidecar.store().put(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn success_and_the_output_cid_rehashes_to_the_output() {
    let s = TestSidecar::start();
    let input = put(&s, b"hello, lane one");
    let out = s
        .client()
        .execute()
        .oneshot(request(7, "sha256", &input, serde_json::Value::Null))
        .await
        .unwrap();
    assert_eq!(out.task_id, TaskId(7));
    let bytes = s.sidecar.store().get(&out.output_cid).unwrap().unwrap();
    assert_eq!(&bytes[..], Sha256::digest(b"hello, lane one").as_slice());
    // Anyone can verify: hashing the output again gives its CID.
    assert_eq!(BlobStore::cid_of(&bytes), out.output_cid);
    let meta: serde_json::Value = serde_json::from_slice(&out.metadata).unwrap();
    assert_eq!(meta["model"], "sha256");
    assert_eq!(meta["output_bytes"], 32);
    assert_eq!(s.sidecar.state("7"), Some(RunState::Completed));
    let progress = s.client().status(TaskId(7)).await.unwrap();
    assert_eq!(progress.status, SidecarStatus::Completed);
    assert_eq!(progress.progress, 1.0);
}

#[tokio::test]
async fn the_text_and_render_models_do_real_work() {
    let s = TestSidecar::start();
    let input = put(&s, b"mixed Case");
    let client = s.client();
    let out = client
        .execute()
        .oneshot(request(1, "uppercase", &input, serde_json::Value::Null))
        .await
        .unwrap();
    assert_eq!(
        &s.sidecar.store().get(&out.output_cid).unwrap().unwrap()[..],
        b"MIXED CASE"
    );
    let out = client
        .execute()
        .oneshot(request(
            2,
            "mandelbrot",
            &input,
            serde_json::json!({"width": 20, "height": 10}),
        ))
        .await
        .unwrap();
    let image = s.sidecar.store().get(&out.output_cid).unwrap().unwrap();
    assert!(image.starts_with(b"P5\n20 10\n255\n"));
}

#[tokio::test]
async fn model_failure_is_a_permanent_body_error() {
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let err = s
        .client()
        .execute()
        .oneshot(request(
            3,
            "fail",
            &input,
            serde_json::json!({"message": "out of ideas"}),
        ))
        .await
        .unwrap_err();
    match &err {
        SidecarError::Model {
            task_id,
            message,
            blame,
        } => {
            assert_eq!(*task_id, TaskId(3));
            assert_eq!(message, "out of ideas");
            assert_eq!(*blame, Blame::Model, "the sidecar's own verdict");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    let status = s.client().status(TaskId(3)).await.unwrap();
    assert_eq!(status.status, SidecarStatus::Failed);
    assert_eq!(status.error.as_deref(), Some("out of ideas"));
}

#[tokio::test]
async fn unknown_model_missing_input_and_bad_parameters_are_body_errors() {
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let client = s.client();
    let cases = [
        (
            request(1, "no-such-model", &input, serde_json::Value::Null),
            "unknown model \"no-such-model\"",
        ),
        (
            request(
                2,
                "sha256",
                &BlobStore::cid_of(b"never stored"),
                serde_json::Value::Null,
            ),
            "is not in the sidecar's store",
        ),
        (
            request(
                3,
                "sleep",
                &input,
                serde_json::json!({"duration_ms": "soon"}),
            ),
            "invalid parameters for sleep",
        ),
        (
            request(4, "noop", &input, serde_json::json!({"surprise": true})),
            "unknown field",
        ),
        (
            ExecuteRequest {
                lane: Lane::Lane0,
                ..request(5, "sha256", &input, serde_json::Value::Null)
            },
            "does not serve lane0",
        ),
    ];
    for (req, want) in cases {
        let id = req.task_id;
        let err = client.execute().oneshot(req).await.unwrap_err();
        match &err {
            SidecarError::Model { message, .. } => {
                assert!(message.contains(want), "{id}: {message}")
            }
            other => panic!("{id}: {other:?}"),
        }
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn the_server_answers_raw_garbage_with_clear_errors() {
    let s = TestSidecar::start();
    let mut raw = RawClient::connect(s.endpoint()).await.unwrap();
    let base = proto::ExecuteTaskRequest {
        task_id: "9".into(),
        model_id: "noop".into(),
        input_cid: put(&s, b"x").to_string(),
        lane: 1,
        ..Default::default()
    };
    let body = |r: tonic::Response<proto::ExecuteTaskResponse>| r.into_inner();
    let r = body(
        raw.execute_task(proto::ExecuteTaskRequest {
            input_cid: "garbage".into(),
            ..base.clone()
        })
        .await
        .unwrap(),
    );
    assert!(!r.success);
    assert!(
        // The message says what was wrong, and that it is the task's input
        // (the class the executor's failure attribution reads).
        r.error_message
            .starts_with("invalid input: input_cid: \"garbage\" is not a valid CID"),
        "{}",
        r.error_message
    );
    let r = body(
        raw.execute_task(proto::ExecuteTaskRequest {
            parameters: b"{oops".to_vec(),
            ..base.clone()
        })
        .await
        .unwrap(),
    );
    assert!(
        r.error_message
            .starts_with("invalid parameters: not valid JSON"),
        "{}",
        r.error_message
    );
    let r = body(
        raw.execute_task(proto::ExecuteTaskRequest {
            lane: 7,
            ..base.clone()
        })
        .await
        .unwrap(),
    );
    assert!(
        r.error_message.contains("invalid lane"),
        "{}",
        r.error_message
    );
    let status = raw
        .execute_task(proto::ExecuteTaskRequest {
            task_id: String::new(),
            ..base.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // Container RPCs say plainly that they are not there.
    let status = raw
        .start_container(proto::StartContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = raw
        .list_plugins(proto::ListPluginsRequest {
            lane: "lane9".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // The server is still fine.
    assert!(body(raw.execute_task(base).await.unwrap()).success);
}

#[tokio::test]
async fn the_sidecar_enforces_timeout_ms_and_stops_the_work() {
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let mut req = request(
        11,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 60_000}),
    );
    req.timeout = Some(Duration::from_millis(200));
    let err = within("timed-out execute", s.client().execute().oneshot(req))
        .await
        .unwrap_err();
    match &err {
        SidecarError::Model { message, blame, .. } => {
            assert_eq!(message, "timed out after 200 ms");
            assert_eq!(*blame, Blame::Time);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.sidecar.state("11"), Some(RunState::Failed));
}

#[tokio::test]
async fn our_own_deadline_gives_a_retryable_timeout() {
    // A peer that accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let client = client_for(&format!("http://{addr}"));
    let mut req = request(
        12,
        "noop",
        &BlobStore::cid_of(b"x"),
        serde_json::Value::Null,
    );
    req.timeout = Some(Duration::from_millis(100));
    let err = within("deadline", client.execute().oneshot(req))
        .await
        .unwrap_err();
    match &err {
        SidecarError::TimedOut { task_id, after } => {
            assert_eq!(*task_id, TaskId(12));
            assert_eq!(*after, Duration::from_millis(600), "timeout + grace");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_retryable());
    held.abort();
}

#[tokio::test]
async fn cancel_mid_run_is_confirmed_by_status() {
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let client = s.client();
    let run = tokio::spawn(client.execute().oneshot(request(
        21,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 60_000}),
    )));
    within("run to start", s.sidecar.wait_for("21", RunState::Running)).await;
    let progress = client.status(TaskId(21)).await.unwrap();
    assert_eq!(progress.status, SidecarStatus::Running);
    let outcome = within("cancel", client.cancel(TaskId(21), "lane 0 needs the GPU"))
        .await
        .unwrap();
    assert!(outcome.was_running);
    assert_eq!(outcome.final_status, Some(SidecarStatus::Cancelled));
    assert_eq!(s.sidecar.state("21"), Some(RunState::Cancelled));
    match within("execute to end", run).await.unwrap() {
        Err(SidecarError::Cancelled { message, .. }) => assert_eq!(message, "cancelled"),
        other => panic!("{other:?}"),
    }
    // Cancelling again, or an unknown task, is not an error: nothing runs.
    let again = client.cancel(TaskId(21), "again").await.unwrap();
    assert_eq!(again.final_status, Some(SidecarStatus::Cancelled));
    let unknown = client.cancel(TaskId(999), "never ran").await.unwrap();
    assert_eq!(unknown.final_status, None);
    assert!(matches!(
        client.status(TaskId(999)).await,
        Err(SidecarError::UnknownTask {
            task_id: TaskId(999)
        })
    ));
}

/// Preempts a 60 s run through the preempt layer with the client's own
/// canceller, and returns how the layer ended it.
async fn preempt_a_long_run(s: &TestSidecar, id: u64) -> Preempted {
    let input = put(s, b"x");
    let client = s.client();
    let preemptor = Preemptor::new();
    let svc = tower::ServiceBuilder::new()
        .preempt(preemptor.clone(), client.canceller())
        .service(client.execute());
    let run = tokio::spawn(svc.oneshot(request(
        id,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 60_000}),
    )));
    let run_id = id.to_string();
    within(
        "run to start",
        s.sidecar.wait_for(&run_id, RunState::Running),
    )
    .await;
    assert!(preemptor.preempt(TaskId(id), PreemptReason::Lane0));
    let err = within("the preempted call to end", run)
        .await
        .unwrap()
        .unwrap_err();
    err.downcast_ref::<Preempted>()
        .cloned()
        .unwrap_or_else(|| panic!("not preempted: {err}"))
}

#[tokio::test]
async fn a_preempted_run_is_confirmed_stopped_by_its_own_answer() {
    let s = TestSidecar::start();
    let preempted = preempt_a_long_run(&s, 23).await;
    assert!(preempted.sidecar_confirmed);
    assert_eq!(s.sidecar.state("23"), Some(RunState::Cancelled));
    // The run's CANCELLED answer confirmed it: the sidecar was never asked
    // for its status.
    assert_eq!(s.sidecar.status_calls(), 0);
}

#[tokio::test]
async fn a_cancel_nsn_only_marks_is_confirmed_by_status_as_the_fallback() {
    let s = nsn_sidecar();
    let preempted = preempt_a_long_run(&s, 24).await;
    assert!(preempted.sidecar_confirmed);
    // The model goes on (NSN's sidecar only marks it), so no answer came:
    // its status said cancelled.
    assert!(s.sidecar.status_calls() >= 1);
}

#[tokio::test]
async fn a_dropped_call_stops_the_run_on_the_sidecar() {
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let run = tokio::spawn(s.client().execute().oneshot(request(
        22,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 60_000}),
    )));
    within("run to start", s.sidecar.wait_for("22", RunState::Running)).await;
    run.abort();
    within(
        "run to be cancelled",
        s.sidecar.wait_for("22", RunState::Cancelled),
    )
    .await;
}

#[tokio::test]
async fn a_run_id_is_never_answered_for_another_request() {
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let client = s.client();
    let first = tokio::spawn(client.execute().oneshot(request(
        23,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 60_000}),
    )));
    within("run to start", s.sidecar.wait_for("23", RunState::Running)).await;
    // Another request under the same id: refused while it runs...
    let other = || request(23, "noop", &input, serde_json::Value::Null);
    let err = client.execute().oneshot(other()).await.unwrap_err();
    assert!(matches!(err, SidecarError::RunIdTaken { .. }), "{err:?}");
    assert!(!err.is_retryable());
    client.cancel(TaskId(23), "done").await.unwrap();
    let _ = first.await;
    // ...and once it ended: the id is the first request's.
    let err = client.execute().oneshot(other()).await.unwrap_err();
    assert!(matches!(err, SidecarError::RunIdTaken { .. }), "{err:?}");
    // The same request that was cancelled may run again (a retry).
    let again = request(23, "sleep", &input, serde_json::json!({"duration_ms": 1}));
    let err = client.execute().oneshot(again).await.unwrap_err();
    assert!(
        matches!(err, SidecarError::RunIdTaken { .. }),
        "other parameters are another request: {err:?}"
    );
}

#[tokio::test]
async fn whoever_is_first_with_a_run_id_does_not_decide_our_output() {
    let s = TestSidecar::start();
    let theirs = put(&s, b"their input");
    let ours = put(&s, b"our input");
    let client = s.client();
    // A third party runs id 26 first, with an input of its choosing.
    let poisoned = client
        .execute()
        .oneshot(request(26, "sha256", &theirs, serde_json::Value::Null))
        .await
        .unwrap();
    // Our request under that id is refused, never answered with theirs.
    let err = client
        .execute()
        .oneshot(request(26, "sha256", &ours, serde_json::Value::Null))
        .await
        .unwrap_err();
    assert!(matches!(err, SidecarError::RunIdTaken { .. }), "{err:?}");
    // Under the next attempt's id, our own input's output.
    let mut next = request(26, "sha256", &ours, serde_json::Value::Null);
    next.attempt = 1;
    let mine = client.execute().oneshot(next).await.unwrap();
    assert_ne!(mine.output_cid, poisoned.output_cid);
    let digest = s.sidecar.store().get(&mine.output_cid).unwrap().unwrap();
    assert_eq!(&digest[..], &Sha256::digest(b"our input")[..]);
    // The same request again is answered from the record, not run twice.
    let mut same = request(26, "sha256", &ours, serde_json::Value::Null);
    same.attempt = 1;
    assert_eq!(client.execute().oneshot(same).await.unwrap(), mine);
}

#[tokio::test]
async fn a_killed_sidecar_gives_a_retryable_error_and_the_client_recovers() {
    let mut s = TestSidecar::start();
    let addr = s.addr;
    let input = put(&s, b"x");
    let client = s.client();
    let run = tokio::spawn(client.execute().oneshot(request(
        31,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 60_000}),
    )));
    within("run to start", s.sidecar.wait_for("31", RunState::Running)).await;
    s.kill();
    let err = within("the call to fail", run).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            SidecarError::Transport {
                task_id: Some(TaskId(31)),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "{err:?}");

    // While it is down: refused connections are retryable too.
    let err = client
        .execute()
        .oneshot(request(32, "noop", &input, serde_json::Value::Null))
        .await
        .unwrap_err();
    // Refused, or the old connection reported reset first: a transport error.
    assert!(matches!(err, SidecarError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");

    // Restarted at the same address: the same client works again.
    let s2 = TestSidecar::start_at(addr);
    let input = put(&s2, b"x");
    let out = within(
        "execute after restart",
        client
            .execute()
            .oneshot(request(33, "noop", &input, serde_json::Value::Null)),
    )
    .await
    .unwrap();
    assert_eq!(out.output_cid, input, "noop returns its input");
}

#[tokio::test]
async fn health_both_ways() {
    let s = TestSidecar::start();
    let health = s.client().health().await.unwrap();
    assert!(health.healthy);
    assert!(health.status.starts_with("serving"));

    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(s.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut std_health = HealthClient::new(channel);
    let r = std_health
        .check(HealthCheckRequest {
            service: "nsn.sidecar.Sidecar".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, ServingStatus::Serving as i32);
    let unknown = std_health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn capabilities_list_the_models_per_lane() {
    let s = TestSidecar::start();
    let caps = s.client().capabilities().await.unwrap();
    let m = |n: &str| ModelId::new(n).unwrap();
    assert!(caps.serves(&m("sha256"), Lane::Lane1));
    assert!(!caps.serves(&m("sha256"), Lane::Lane0));
    assert!(caps.serves(&m("video-render"), Lane::Lane0));
    assert!(!caps.serves(&m("llama"), Lane::Lane1));
    assert_eq!(caps.models.len(), 7);
    assert_eq!(caps.models[&m("sleep")].loaded.as_deref(), Some("hot"));
    assert!(caps.rejected.is_empty(), "{:?}", caps.rejected);
}

#[tokio::test]
async fn lane0_model_renders_frames() {
    let s = TestSidecar::start();
    let input = put(&s, b"scene");
    let mut req = request(41, "video-render", &input, serde_json::json!({"frames": 3}));
    req.lane = Lane::Lane0;
    let out = s.client().execute().oneshot(req).await.unwrap();
    let video = s.sidecar.store().get(&out.output_cid).unwrap().unwrap();
    assert_eq!(video.len(), 3 * (b"P5\n32 32\n255\n".len() + 32 * 32));
}

#[tokio::test]
async fn the_sidecar_bounds_concurrent_runs_and_run_time() {
    let limits = nsn_lane1::sidecar::server::SidecarLimits {
        max_runs: 1,
        max_run_time: Duration::from_millis(300),
    };
    let s = TestSidecar::start_with("127.0.0.1:0".parse().unwrap(), limits);
    let input = put(&s, b"x");
    let client = s.client();
    // The request allows 30 s; the sidecar's own bound is 300 ms.
    let first = tokio::spawn(client.execute().oneshot(request(
        31,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 60_000}),
    )));
    within("run to start", s.sidecar.wait_for("31", RunState::Running)).await;
    let err = client
        .execute()
        .oneshot(request(32, "noop", &input, serde_json::Value::Null))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SidecarError::Rpc {
                code: tonic::Code::ResourceExhausted,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable(), "a full sidecar is not the task's fault");
    let err = within("the bounded run", first).await.unwrap().unwrap_err();
    match &err {
        SidecarError::Model { message, .. } => assert_eq!(message, "timed out after 300 ms"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.sidecar.state("31"), Some(RunState::Failed));
    // The slot is free again.
    client
        .execute()
        .oneshot(request(32, "noop", &input, serde_json::Value::Null))
        .await
        .unwrap();
}

// ---- a sidecar that behaves as NSN's deployed one ---------------------------

fn nsn_sidecar() -> TestSidecar {
    let s = TestSidecar::start();
    s.sidecar.set_semantics(Semantics::Nsn);
    s
}

#[tokio::test]
async fn nsn_semantics_run_ids_are_single_use_whatever_the_end() {
    let s = nsn_sidecar();
    let input = put(&s, b"x");
    let client = s.client();
    let req = || request(40, "noop", &input, serde_json::Value::Null);
    client.execute().oneshot(req()).await.unwrap();
    // Completed: the same request under the same id is refused, for good.
    for _ in 0..2 {
        match client.execute().oneshot(req()).await.unwrap_err() {
            SidecarError::RunIdTaken { run, message } => {
                assert_eq!(run.to_string(), "40");
                assert_eq!(message, "Task already running: 40");
            }
            other => panic!("{other:?}"),
        }
    }
    // Failed: refused too.
    let fail = || request(41, "fail", &input, serde_json::json!({"message": "no"}));
    let err = client.execute().oneshot(fail()).await.unwrap_err();
    assert!(matches!(err, SidecarError::Model { .. }), "{err:?}");
    let err = client.execute().oneshot(fail()).await.unwrap_err();
    assert!(matches!(err, SidecarError::RunIdTaken { .. }), "{err:?}");
    // Its status carries no output CID, and an unknown id is NOT_FOUND.
    let status = client.status(TaskId(40)).await.unwrap();
    assert_eq!(status.status, SidecarStatus::Completed);
    assert!(matches!(
        client.status(TaskId(49)).await,
        Err(SidecarError::UnknownTask { .. })
    ));
}

#[tokio::test]
async fn nsn_semantics_a_cancel_only_marks_the_run() {
    let s = nsn_sidecar();
    let input = put(&s, b"x");
    let client = s.client();
    let run = tokio::spawn(client.execute().oneshot(request(
        42,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 300}),
    )));
    within("run to start", s.sidecar.wait_for("42", RunState::Running)).await;
    let outcome = within("cancel", client.cancel(TaskId(42), "someone else"))
        .await
        .unwrap();
    assert!(outcome.was_running);
    assert_eq!(outcome.final_status, Some(SidecarStatus::Cancelled));
    let status = client.status(TaskId(42)).await.unwrap();
    assert_eq!(status.error.as_deref(), Some("Cancelled: someone else"));
    // The model went on: the call ends when it does, as CANCELLED.
    match within("the call to end", run).await.unwrap() {
        Err(SidecarError::Cancelled { message, .. }) => {
            assert_eq!(message, "Task was cancelled: 42")
        }
        other => panic!("{other:?}"),
    }
    let history = s.sidecar.run_history();
    let record = history.iter().find(|r| r.task_id == "42").unwrap();
    assert!(
        record.ended - record.started >= Duration::from_millis(300),
        "the model ran to its end"
    );
}

#[tokio::test]
async fn nsn_semantics_failures_come_in_nsn_words_and_blame_no_model() {
    let s = nsn_sidecar();
    let input = put(&s, b"x");
    let client = s.client();
    let blame_of = |err: &SidecarError| err.blame();
    // The model failing: words only, not a verdict.
    let err = client
        .execute()
        .oneshot(request(
            50,
            "fail",
            &input,
            serde_json::json!({"message": "boom"}),
        ))
        .await
        .unwrap_err();
    match &err {
        SidecarError::Model { message, blame, .. } => {
            assert_eq!(message, "Task execution failed: boom");
            assert_eq!(*blame, Blame::Unknown);
        }
        other => panic!("{other:?}"),
    }
    // Parameters that are not an object: the task's.
    let err = client
        .execute()
        .oneshot(request(51, "noop", &input, serde_json::json!([1])))
        .await
        .unwrap_err();
    assert_eq!(blame_of(&err), Some(Blame::Task), "{err:?}");
    // A plugin nobody has: NOT_FOUND, the task's.
    let err = client
        .execute()
        .oneshot(request(52, "llama", &input, serde_json::Value::Null))
        .await
        .unwrap_err();
    assert_eq!(blame_of(&err), Some(Blame::Task), "{err:?}");
    // The node's set-up: the plugin runner, VRAM, the container.
    for (fault, id) in [
        (SetupFault::RunnerNotConfigured, 53),
        (SetupFault::SandboxRequired, 54),
        (SetupFault::InsufficientVram, 55),
        (SetupFault::ContainerUnhealthy, 56),
    ] {
        s.sidecar.set_setup_fault(Some(fault));
        let err = client
            .execute()
            .oneshot(request(id, "noop", &input, serde_json::Value::Null))
            .await
            .unwrap_err();
        assert_eq!(blame_of(&err), Some(Blame::Setup), "{fault:?}: {err:?}");
    }
    s.sidecar.set_setup_fault(None);
    // Its own run timeout: time.
    let mut req = request(
        57,
        "sleep",
        &input,
        serde_json::json!({"duration_ms": 5_000}),
    );
    req.timeout = Some(Duration::from_millis(100));
    let err = client.execute().oneshot(req).await.unwrap_err();
    assert_eq!(blame_of(&err), Some(Blame::Time), "{err:?}");
}

#[tokio::test]
async fn the_reference_sidecar_gives_its_verdict() {
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let client = s.client();
    let blame = |r: Result<_, SidecarError>| r.unwrap_err().blame();
    let run = |id, model, params| client.execute().oneshot(request(id, model, &input, params));
    assert_eq!(
        blame(run(60, "fail", serde_json::json!({"message": "no"})).await),
        Some(Blame::Model)
    );
    assert_eq!(
        blame(run(61, "sleep", serde_json::json!({"duration_ms": "x"})).await),
        Some(Blame::Task)
    );
    assert_eq!(
        blame(run(62, "llama", serde_json::Value::Null).await),
        Some(Blame::Task)
    );
    s.sidecar
        .set_setup_fault(Some(SetupFault::RunnerNotConfigured));
    assert_eq!(
        blame(run(63, "noop", serde_json::Value::Null).await),
        Some(Blame::Setup)
    );
}

#[tokio::test]
async fn a_sidecar_with_a_credential_refuses_calls_without_it() {
    use nsn_lane1::sidecar::client::{AuthToken, SidecarClient, SidecarConfig};
    let s = TestSidecar::start();
    let input = put(&s, b"x");
    let token = AuthToken::new("a-token-of-the-node-0123456789", "test").unwrap();
    s.sidecar.set_auth_token(Some(token.clone()));
    let with = |t: Option<AuthToken>| {
        let mut c = SidecarConfig::new(s.endpoint());
        c.auth_token = t;
        SidecarClient::connect_lazy(c).unwrap()
    };
    let req = |id| request(id, "noop", &input, serde_json::Value::Null);
    let wrong = AuthToken::new("a-token-of-another-0123456789", "test").unwrap();
    for (client, id) in [(with(None), 70), (with(Some(wrong)), 71)] {
        match client.execute().oneshot(req(id)).await.unwrap_err() {
            SidecarError::Rpc { code, .. } => assert_eq!(code, tonic::Code::Unauthenticated),
            other => panic!("{other:?}"),
        }
        // Nor can it stop or read runs.
        assert!(client.cancel(TaskId(72), "meddling").await.is_err());
        assert!(client.status(TaskId(72)).await.is_err());
    }
    assert_eq!(s.sidecar.state("70"), None, "nothing ran");
    let ours = with(Some(token));
    ours.execute().oneshot(req(72)).await.unwrap();
    assert!(format!("{:?}", ours.config()).contains("AuthToken(..)"));
    assert!(!format!("{:?}", ours.config()).contains("a-token-of-the-node"));
}

#[tokio::test]
async fn a_sidecar_that_keeps_models_loaded_tells_the_truth_about_them() {
    use nsn_lane1::sidecar::server::{MODEL_VRAM_MB, Residency};
    let s = TestSidecar::start();
    s.sidecar.set_residency(Some(Residency {
        load: Duration::from_millis(200),
        slots: 1,
    }));
    assert!(s.sidecar.preload("noop"));
    let input = put(&s, b"x");
    let mut raw = RawClient::connect(s.endpoint()).await.unwrap();
    let loaded = |r: proto::GetLoadedModelsResponse| -> Vec<String> {
        r.models.into_iter().map(|m| m.model_id).collect()
    };
    let ask = proto::GetLoadedModelsRequest {
        container_id: String::new(),
    };
    assert_eq!(
        loaded(
            raw.get_loaded_models(ask.clone())
                .await
                .unwrap()
                .into_inner()
        ),
        ["noop"]
    );
    // A model not loaded is loaded first, and evicts the other (one slot).
    let started = std::time::Instant::now();
    s.client()
        .execute()
        .oneshot(request(
            60,
            "sleep",
            &input,
            serde_json::json!({"duration_ms": 1}),
        ))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the load took its time"
    );
    assert_eq!(s.sidecar.loads(), 1);
    assert_eq!(
        loaded(
            raw.get_loaded_models(ask.clone())
                .await
                .unwrap()
                .into_inner()
        ),
        ["sleep"]
    );
    let vram = raw
        .get_vram_status(proto::GetVramStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let gb = MODEL_VRAM_MB as f32 / 1024.0;
    assert_eq!((vram.total_vram_gb, vram.used_vram_gb), (gb, gb));
    assert_eq!(vram.model_allocations.len(), 1);
    // Unloaded on request: nothing left.
    let unloaded = raw
        .unload_model(proto::UnloadModelRequest {
            model_id: "sleep".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unloaded.success);
    assert!(loaded(raw.get_loaded_models(ask).await.unwrap().into_inner()).is_empty());
    // The client sees what is loaded through its capabilities.
    let caps = s.client().capabilities().await.unwrap();
    assert!(caps.models.values().all(|c| c.loaded.is_none()));
}
