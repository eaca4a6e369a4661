//! A count of the calls inside a service: incremented on `call`, decremented
//! when the call's future completes or is dropped. A pass-through: it adds no
//! way to fail. It counts into any [`InFlightCount`] (the crate's telemetry
//! gauge is one).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::{Layer, Service};

/// Where the count is kept.
pub trait InFlightCount: Clone + std::fmt::Debug {
    /// One more call inside.
    fn inc(&self);
    /// One call fewer.
    fn dec(&self);
}

/// Keeps a gauge of in-flight calls.
#[derive(Clone, Debug)]
pub struct InFlight<S, G> {
    inner: S,
    gauge: G,
}

impl<S, G> InFlight<S, G> {
    /// Wraps `inner`.
    pub fn new(inner: S, gauge: G) -> Self {
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
pub struct InFlightLayer<G> {
    gauge: G,
}

impl<G> InFlightLayer<G> {
    /// Counts into `gauge`.
    pub fn new(gauge: G) -> Self {
        InFlightLayer { gauge }
    }
}

impl<S, G: Clone> Layer<S> for InFlightLayer<G> {
    type Service = InFlight<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlight::new(inner, self.gauge.clone())
    }
}

#[derive(Debug)]
struct Held<G: InFlightCount>(G);

impl<G: InFlightCount> Drop for Held<G> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The response future of [`InFlight`].
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F, G: InFlightCount> {
    #[pin]
    inner: F,
    _held: Held<G>,
}

impl<F: Future, G: InFlightCount> Future for ResponseFuture<F, G> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S: Service<R>, G: InFlightCount, R> Service<R> for InFlight<S, G> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, G>;

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
