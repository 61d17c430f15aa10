//! A client-side request rate limit for the controller manager's clients, as client-go's
//! QPS and burst bound a Kubernetes controller's (spec §9.2 `--federated-api-qps`,
//! `--federated-api-burst`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Mutex;
use tower::{Layer, Service, ServiceExt as _};

/// At most `qps` requests a second after a burst of `burst`.
#[derive(Clone)]
pub struct RateLimit(Arc<DefaultDirectRateLimiter>);

impl RateLimit {
    /// `None` when `qps` is 0: unlimited.
    pub fn new(qps: u32, burst: u32) -> Option<RateLimit> {
        let qps = NonZeroU32::new(qps)?;
        let burst = NonZeroU32::new(burst).unwrap_or(qps);
        Some(RateLimit(Arc::new(RateLimiter::direct(
            Quota::per_second(qps).allow_burst(burst),
        ))))
    }
}

impl<S> Layer<S> for RateLimit {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited {
            // kube's service stack is not Clone: requests take turns to start on it.
            inner: Arc::new(Mutex::new(inner)),
            limit: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Limited<S> {
    inner: Arc<Mutex<S>>,
    limit: RateLimit,
}

impl<S, R> Service<R> for Limited<S>
where
    S: Service<R> + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The wait for the limit and for the inner service happens in the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        let (inner, limit) = (self.inner.clone(), self.limit.clone());
        Box::pin(async move {
            limit.0.until_ready().await;
            let response = {
                let mut inner = inner.lock().await;
                inner.ready().await?.call(request)
            };
            response.await
        })
    }
}
