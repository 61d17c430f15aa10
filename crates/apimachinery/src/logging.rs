//! Logging for the Fellowship servers and commands: to standard error, at the level their
//! verbosity flag chose unless `RUST_LOG` says otherwise.

pub fn init(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
}
