//! The controller manager's own HTTP endpoint (`--address`, `--port`): `/healthz`,
//! `/metrics`, and with `--profiling` a CPU profile at `/debug/pprof/profile`, as the
//! original's (`?seconds=N`, 30 by default; `go tool pprof` reads it; 429 while another is
//! being taken).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fellowship_apimachinery::profiling::{self, ProfileError};

use crate::metrics::Metrics;

pub fn router(metrics: Arc<Metrics>, profiling: bool) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { metrics.render() }));
    if !profiling {
        return router;
    }
    router
        .route("/debug/pprof/", get(|| async { PROFILES }))
        .route("/debug/pprof/profile", get(cpu_profile))
}

const PROFILES: &str = "profile: CPU profile, pprof format (?seconds=N, default 30)\n";

async fn cpu_profile(Query(query): Query<HashMap<String, String>>) -> Response {
    match profiling::cpu(query.get("seconds").map(String::as_str)).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => {
            let code = match e {
                ProfileError::Seconds => StatusCode::BAD_REQUEST,
                ProfileError::Busy => StatusCode::TOO_MANY_REQUESTS,
                ProfileError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, format!("{e}\n")).into_response()
        }
    }
}
