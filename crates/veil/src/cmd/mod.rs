//! One module per subcommand area. Each exposes its clap types and a `run` function.

pub mod audit;
pub mod bench;
pub mod cas;
pub mod cas_node;
pub mod cert;
pub mod evidence;
pub mod identity;
pub mod las;
pub mod otp;
pub mod remote;
pub mod run;
pub mod sconify;
pub mod session;
pub mod session_remote;
pub mod volume;

/// Logs go to stderr; `VEIL_LOG` (or `RUST_LOG`) sets the filter, default `info`.
pub fn init_logging() {
    let filter = std::env::var("VEIL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
