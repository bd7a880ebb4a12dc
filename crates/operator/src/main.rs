//! The `omniscale` binary.

use std::process::ExitCode;

use clap::Parser;

/// The sync cycles allocate and free a namespace's worth of pods and metrics every period;
/// mimalloc handles that churn markedly faster than the system allocator (`cargo xtask bench
/// hpa` measures the difference).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    omniscale_operator::install_crypto_provider();
    let cli = omniscale_operator::cli::Cli::parse();
    omniscale_operator::telemetry::init(cli.log_format, &cli.log_filter);
    match omniscale_operator::execute(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, plainly: log lines may be JSON, and the user needs the reason as a sentence.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
