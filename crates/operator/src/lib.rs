//! The omniscale operator: CLI, wiring, leader election, health/metrics server and the
//! validation controllers. Engines live in their own crates; this crate is the only one that
//! talks to a cluster.

pub mod cli;
pub mod cloud;
pub mod controller;
pub mod error;
pub mod horizontal;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod nodes;
pub mod plan;
pub mod rbac;
pub mod report;
pub mod run;
pub mod sim;
pub mod targets;
pub mod telemetry;
pub mod validate;
pub mod vertical;
pub mod webhook;

pub use error::{Error, Result};

/// Installs the process-wide rustls crypto provider (aws-lc-rs, the AWS SDK's).
///
/// Called first thing in `main`: with more than one provider compiled in, rustls refuses to
/// pick and panics at the first TLS handshake; installing explicitly makes the choice ours.
pub fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Runs a parsed command line.
pub async fn execute(cli: cli::Cli) -> Result<()> {
    match cli.command {
        cli::Command::Run(args) => run::run(*args).await,
        cli::Command::Crds => {
            print!("{}", omniscale_api::render_crds_yaml()?);
            Ok(())
        }
        cli::Command::Version => {
            println!("omniscale {} (API omniscale.dev/v1alpha1, Kubernetes >= 1.33)", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        cli::Command::Sim(args) => sim::sim(args).await,
        cli::Command::Plan(args) => {
            println!("{}", plan::run(&args)?);
            Ok(())
        }
    }
}
