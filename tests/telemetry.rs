//! The telemetry endpoint over real HTTP on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nsn_lane1::telemetry::http::{ReadyCheck, serve};
use nsn_lane1::telemetry::metrics::Lane1Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let metrics = Lane1Metrics::default();
    metrics.tasks.with(&["submitted", "lane1", "sha256"]).inc();
    let ready_flag = Arc::new(AtomicBool::new(false));
    let flag = ready_flag.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let ok = flag.load(Ordering::SeqCst);
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err("sidecar unreachable".into())
            }
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        metrics.registry.clone(),
        ready,
        stop.clone().cancelled_owned(),
    ));

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("lane1_tasks_total{outcome=\"submitted\",lane=\"lane1\",model=\"sha256\"} 1"),
        "{body}"
    );
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        get(addr, "/readyz").await,
        (503, "not ready: sidecar unreachable\n".into())
    );
    ready_flag.store(true, Ordering::SeqCst);
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(addr, "/nope").await.0, 404);

    stop.cancel();
    server.await.unwrap();
}
