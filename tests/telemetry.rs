//! The telemetry endpoint over real HTTP on loopback, and the deploy kit
//! (`deploy/`) checked against it: the example config parses, and every
//! metric the dashboard and the alert rules use is in a real scrape.
#![cfg(feature = "dev")]

mod support;

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
    // Each scrape asks the node's liveness and readiness too.
    let (_, body) = get(addr, "/metrics").await;
    assert!(body.lines().any(|l| l == "lane1_ready 1"), "{body}");
    assert!(body.lines().any(|l| l == "lane1_live 1"), "{body}");

    stop.cancel();
    server.await.unwrap();
}

#[test]
fn the_example_config_is_a_valid_config() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lane1.toml");
    let config = nsn_lane1::config::Config::from_file(&path).expect("deploy/lane1.toml parses");
    config.executor_config().expect("valid executor settings");
    config.sidecar_config().expect("valid sidecar settings");
    assert_eq!(config.executor.admission.block_time_secs, 6.0);
}

#[test]
fn the_service_unit_takes_its_key_as_a_credential_and_drops_privileges() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nsn-lane1.service"),
    )
    .unwrap();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "LoadCredential=lane1.key:/etc/nsn-lane1/lane1.key",
        "Environment=NSN_LANE1_KEY_FILE=%d/lane1.key",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadOnlyPaths=/etc/nsn-lane1",
        "DynamicUser=yes",
        "KillSignal=SIGINT",
    ] {
        assert!(has(line), "{line}");
    }
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(!exec.contains("key"), "no key on the command line: {exec}");
}

/// Metric names (`lane1_…`) in a text.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("lane1_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_in_a_real_scrape() {
    use support::Harness;
    // A node that has run a task to verification.
    let h = Harness::start(Default::default(), support::timed);
    h.post_until_verified("sha256", b"scrape me").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let live = h.node.liveness();
    tokio::spawn(nsn_lane1::telemetry::http::serve_node(
        listener,
        h.metrics.registry.clone(),
        Arc::new(move || live.check()),
        nsn_lane1::node::ready_check(h.chain.clone(), h.sidecar.client(), None),
        stop.clone().cancelled_owned(),
    ));
    let (status, scrape) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(scrape.lines().any(|l| l == "lane1_ready 1"), "{scrape}");
    // What the scrape exposes: each sample's name, and each family's
    // names with the suffixes its type adds.
    let mut exposed = std::collections::BTreeSet::new();
    for line in scrape.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut parts = t.split(' ');
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            exposed.insert(family.to_owned());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[],
            };
            for s in suffixes {
                exposed.insert(format!("{family}{s}"));
            }
        } else if !line.starts_with('#')
            && let Some(name) = line.split(['{', ' ']).next()
        {
            exposed.insert(name.to_owned());
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let alerts = std::fs::read_to_string(root.join("alerts.yml")).unwrap();
    let used: std::collections::BTreeSet<String> = metric_names(&dashboard)
        .union(&metric_names(&alerts))
        .cloned()
        .collect();
    assert!(used.len() >= 10, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(missing.is_empty(), "not in a scrape: {missing:?}\n{scrape}");
    stop.cancel();
}
