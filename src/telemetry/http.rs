//! The telemetry endpoint, over hyper and tower-http: `/metrics`
//! (OpenMetrics text), `/healthz` (the node is alive: its listener and
//! executor run) and `/readyz` (the chain and the sidecar answer). Each
//! scrape of `/metrics` also asks both, as `lane1_live` and `lane1_ready`
//! (1 or 0), so that alerts need no second probe. It binds to loopback
//! unless told otherwise.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use super::metrics::{Gauge, Registry};

/// Answers whether the node can do its work: `Err` says what is not ready.
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Answers whether the node is alive: `Err` says why it is not.
pub type LiveCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// The registry, with the node's liveness and readiness as gauges.
#[derive(Clone)]
struct Scrape {
    registry: Registry,
    live: Gauge,
    ready: Gauge,
}

/// How long a scrape waits for the readiness check.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn handle(
    req: Request<Incoming>,
    scrape: Scrape,
    live: LiveCheck,
    ready: ReadyCheck,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            scrape.live.set(i64::from(live().is_ok()));
            let is_ready = matches!(tokio::time::timeout(READY_WAIT, ready()).await, Ok(Ok(())));
            scrape.ready.set(i64::from(is_ready));
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                scrape.registry.render(),
            )
        }
        (&hyper::Method::GET, "/healthz") => match live() {
            Ok(()) => text(StatusCode::OK, plain, "ok\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                plain,
                format!("dead: {why}\n"),
            ),
        },
        (&hyper::Method::GET, "/readyz") => match ready().await {
            Ok(()) => text(StatusCode::OK, plain, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                plain,
                format!("not ready: {why}\n"),
            ),
        },
        (&hyper::Method::GET, _) => text(StatusCode::NOT_FOUND, plain, "not found\n".into()),
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            plain,
            "method not allowed\n".into(),
        ),
    })
}

/// Serves the endpoint on `listener` until `shutdown` resolves, the process
/// counting as alive while it serves.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    ready: ReadyCheck,
    shutdown: impl Future<Output = ()>,
) {
    serve_node(listener, registry, Arc::new(|| Ok(())), ready, shutdown).await;
}

/// Serves the endpoint on `listener` until `shutdown` resolves, with
/// `/healthz` answering from `live` (a node's liveness).
pub async fn serve_node(
    listener: TcpListener,
    registry: Registry,
    live: LiveCheck,
    ready: ReadyCheck,
    shutdown: impl Future<Output = ()>,
) {
    let scrape = Scrape {
        live: registry
            .gauge(
                "lane1_live",
                "1 while the node's listener and executor run.",
                &[],
            )
            .with(&[]),
        ready: registry
            .gauge(
                "lane1_ready",
                "1 while the chain and the sidecar answer.",
                &[],
            )
            .with(&[]),
        registry,
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "telemetry accept failed");
                    continue;
                }
            },
        };
        let scrape = scrape.clone();
        let ready = ready.clone();
        let live = live.clone();
        let svc = ServiceBuilder::new()
            .layer(TraceLayer::new_for_http())
            .service(tower::service_fn(move |req| {
                handle(req, scrape.clone(), live.clone(), ready.clone())
            }));
        tokio::spawn(async move {
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await
            {
                tracing::debug!(%peer, error = %e, "telemetry connection ended");
            }
        });
    }
}
