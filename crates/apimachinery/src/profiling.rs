//! CPU profiles of the running process in the pprof format (`--profiling`): what Go's
//! `/debug/pprof/profile` serves, so `go tool pprof http://host:port/debug/pprof/profile`
//! works against Fellowship's servers as against Kubernetes' own.

use pprof::protos::Message as _;

/// Samples a second, as Go's profiler takes.
const FREQUENCY: i32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("a CPU profile is already being taken")]
    Busy,
    #[error("CPU profiling failed: {0}")]
    Failed(String),
}

/// A CPU profile being taken: every thread's stack, sampled until [`CpuProfile::finish`].
/// One at a time per process.
pub struct CpuProfile(pprof::ProfilerGuard<'static>);

impl CpuProfile {
    pub fn start() -> Result<CpuProfile, ProfileError> {
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

    /// Stops sampling; the profile, protobuf-encoded. Symbolizing takes a while for a
    /// large profile: call this off the async threads.
    pub fn finish(self) -> Result<Vec<u8>, ProfileError> {
        let profile = (self.0.report().build())
            .and_then(|report| report.pprof())
            .map_err(|e| ProfileError::Failed(e.to_string()));
        // Symbolizing parsed the binary's debug information, some hundreds of MiB, into a
        // process-wide cache that would otherwise be held for good.
        backtrace::clear_symbol_cache();
        Ok(profile?.encode_to_vec())
    }
}
