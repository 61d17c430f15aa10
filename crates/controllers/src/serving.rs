//! The controller manager's own HTTP endpoint (`--address`, `--port`): `/healthz`,
//! `/metrics`, and with `--profiling` a CPU profile at `/debug/pprof/profile`, as the
//! original's (`?seconds=N`, 30 by default; `go tool pprof` reads it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fellowship_apimachinery::profiling::{CpuProfile, ProfileError};

use crate::metrics::Metrics;

/// How long a profile lasts unless the request says.
const PROFILE_SECONDS: u64 = 30;
/// The longest profile one request may ask for.
const LONGEST_PROFILE: u64 = 600;

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
    let seconds = match query.get("seconds").map(|s| s.parse::<u64>()) {
        None => PROFILE_SECONDS,
        Some(Ok(n)) if (1..=LONGEST_PROFILE).contains(&n) => n,
        Some(_) => {
            let error = format!("seconds: a whole number from 1 to {LONGEST_PROFILE}\n");
            return (StatusCode::BAD_REQUEST, error).into_response();
        }
    };
    // The profiler is a process-wide signal timer: it is started, waited on and read on a
    // blocking thread, and the request waits for that.
    let taken = tokio::task::spawn_blocking(move || {
        let profile = CpuProfile::start()?;
        std::thread::sleep(Duration::from_secs(seconds));
        profile.finish()
    })
    .await;
    match taken {
        Ok(Ok(bytes)) => (
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
        Ok(Err(e @ ProfileError::Busy)) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
