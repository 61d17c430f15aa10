//! CPU profiles of the running process in the pprof format (`--profiling`): what Go's
//! `/debug/pprof/profile?seconds=N` serves, so `go tool pprof` works against Fellowship's
//! servers as against Kubernetes' own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pprof::protos::Message as _;

/// Samples a second, as Go's profiler takes.
const FREQUENCY: i32 = 100;
/// How long a profile lasts unless asked otherwise, as Go's.
const SECONDS: u64 = 30;
/// The longest profile one request may ask for.
const LONGEST: u64 = 600;
/// How often a profile being taken looks whether its client is still there.
const LOOK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("seconds: a whole number from 1 to {LONGEST}")]
    Seconds,
    #[error("a CPU profile is already being taken")]
    Busy,
    #[error("CPU profiling failed: {0}")]
    Failed(String),
    #[error("the client went away")]
    Abandoned,
}

/// Held by the request a profile is taken for: dropped (the client went away and the
/// server dropped the request), it stops the profile, which would otherwise keep others
/// waiting for nothing.
pub struct Requester(Arc<AtomicBool>);

impl Requester {
    pub fn new() -> Requester {
        Requester(Arc::new(AtomicBool::new(false)))
    }

    /// What [`cpu`] watches.
    pub fn gone(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

impl Default for Requester {
    fn default() -> Requester {
        Requester::new()
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Samples every thread's stack for `seconds` (the request's `seconds` parameter, 30 if
/// absent), or until `gone` (its [`Requester`] was dropped); the profile, protobuf-encoded.
/// One at a time per process. It blocks the thread for as long as it samples, and
/// symbolizing takes a while after: call it off the async threads.
pub fn cpu(seconds: Option<&str>, gone: &AtomicBool) -> Result<Vec<u8>, ProfileError> {
    let seconds = match seconds.map(str::parse::<u64>) {
        None => SECONDS,
        Some(Ok(n)) if (1..=LONGEST).contains(&n) => n,
        Some(_) => return Err(ProfileError::Seconds),
    };
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        // Unwinding from a signal that arrived inside these could deadlock (pprof-rs's
        // advice); their frames are of no interest here.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| match e {
            pprof::Error::Running => ProfileError::Busy,
            e => ProfileError::Failed(e.to_string()),
        })?;
    let end = Instant::now() + Duration::from_secs(seconds);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if gone.load(Ordering::Relaxed) {
            return Err(ProfileError::Abandoned);
        }
        std::thread::sleep(left.min(LOOK));
    }
    let profile = (guard.report().build())
        .and_then(|report| report.pprof())
        .map_err(|e| ProfileError::Failed(e.to_string()));
    drop(guard);
    // Symbolizing parsed the binary's debug information, some hundreds of MiB, into a
    // process-wide cache that would otherwise be held for good.
    backtrace::clear_symbol_cache();
    Ok(profile?.encode_to_vec())
}
