//! CPU profiles of the running process in the pprof format (`--profiling`): what Go's
//! `/debug/pprof/profile?seconds=N` serves, so `go tool pprof` works against Fellowship's
//! servers as against Kubernetes' own.

use std::time::Duration;

use pprof::protos::Message as _;

/// Samples a second, as Go's profiler takes.
const FREQUENCY: i32 = 100;
/// How long a profile lasts unless asked otherwise, as Go's.
const SECONDS: u64 = 30;
/// The longest profile one request may ask for.
const LONGEST: u64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("seconds: a whole number from 1 to {LONGEST}")]
    Seconds,
    #[error("a CPU profile is already being taken")]
    Busy,
    #[error("CPU profiling failed: {0}")]
    Failed(String),
}

/// Samples every thread's stack for `seconds` (the request's `seconds` parameter, 30 if
/// absent); the profile, protobuf-encoded. One at a time per process. Dropped before it
/// ends (its request went away), the future stops the profile.
pub async fn cpu(seconds: Option<&str>) -> Result<Vec<u8>, ProfileError> {
    let duration = duration(seconds)?;
    let failed = |e: tokio::task::JoinError| ProfileError::Failed(e.to_string());
    let profile = tokio::task::spawn_blocking(CpuProfile::start)
        .await
        .map_err(failed)??;
    tokio::time::sleep(duration).await;
    tokio::task::spawn_blocking(move || profile.finish())
        .await
        .map_err(failed)?
}

/// How long a profile is to last: the request's `seconds` parameter, 30 if absent.
fn duration(seconds: Option<&str>) -> Result<Duration, ProfileError> {
    match seconds.map(str::parse::<u64>) {
        None => Ok(Duration::from_secs(SECONDS)),
        Some(Ok(n)) if (1..=LONGEST).contains(&n) => Ok(Duration::from_secs(n)),
        Some(_) => Err(ProfileError::Seconds),
    }
}

/// A CPU profile being taken: sampling stops when it is finished or dropped. Starting and
/// finishing read symbols, which takes a while: both run off the async threads.
struct CpuProfile(pprof::ProfilerGuard<'static>);

impl CpuProfile {
    fn start() -> Result<CpuProfile, ProfileError> {
        pprof::ProfilerGuardBuilder::default()
            .frequency(FREQUENCY)
            // Unwinding from a signal that arrived inside these could deadlock (pprof-rs's
            // advice); their frames are of no interest here.
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map(CpuProfile)
            .map_err(|e| match e {
                pprof::Error::Running => ProfileError::Busy,
                e => ProfileError::Failed(e.to_string()),
            })
    }

    /// Stops sampling; the profile, protobuf-encoded.
    fn finish(self) -> Result<Vec<u8>, ProfileError> {
        let profile = (self.0.report().build())
            .and_then(|report| report.pprof())
            .map_err(|e| ProfileError::Failed(e.to_string()));
        drop(self);
        // Symbolizing parsed the binary's debug information, some hundreds of MiB, into a
        // process-wide cache that would otherwise be held for good.
        backtrace::clear_symbol_cache();
        Ok(profile?.encode_to_vec())
    }
}
