//! The `collab-bridge` binary: parses configuration, sets up logging, runs the bridge.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use collab_bridge::config::Config;
use tracing_subscriber::EnvFilter;

/// jemalloc (with its background thread purging) gives memory back to the system once it is
/// free; glibc's malloc kept the high-water mark of a spike of connections (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = Config::parse();
    let filter = EnvFilter::try_new(&cfg.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match collab_bridge::run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collab-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
