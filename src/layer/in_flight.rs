//! A gauge of the calls inside a service: incremented on `call`, decremented
//! when the call's future completes or is dropped. A pass-through: it adds no
//! way to fail.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::{Layer, Service};

use crate::telemetry::metrics::Gauge;

/// Keeps a gauge of in-flight calls.
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    gauge: Gauge,
}

impl<S> InFlight<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, gauge: Gauge) -> Self {
        InFlight { inner, gauge }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Applies [`InFlight`].
#[derive(Clone, Debug)]
pub struct InFlightLayer {
    gauge: Gauge,
}

impl InFlightLayer {
    /// Counts into `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        InFlightLayer { gauge }
    }
}

impl<S> Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight::new(inner, self.gauge.clone())
    }
}

#[derive(Debug)]
struct Held(Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The response future of [`InFlight`].
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    _held: Held,
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S: Service<R>, R> Service<R> for InFlight<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.gauge.inc();
        ResponseFuture {
            inner: self.inner.call(req),
            _held: Held(self.gauge.clone()),
        }
    }
}
