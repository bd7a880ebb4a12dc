//! Project chores: `cargo xtask crds` regenerates `manifests/00-crds.yaml` from the Rust types;
//! `cargo xtask check` fails when the committed file has drifted from them; `cargo xtask image`
//! builds and checks the container image; `cargo xtask bench
//! cluster [FILTER]` runs the scheduling benchmarks, `cargo xtask bench hpa [FILTER]` the
//! horizontal sync-cycle benchmark, `cargo xtask bench vpa [FILTER]` the vertical recommender
//! round, `cargo xtask bench nodes` the node shell's scale-up decision latency, `cargo xtask bench nodes-engine [FILTER]` one node-engine loop at 1,000 nodes, and `cargo xtask bench webhook [FILTER]` the admission
//! webhook's HTTPS latency (release builds), one JSON object per line.

mod image;

use std::{path::PathBuf, process::ExitCode};

/// Where the generated CRDs live, relative to the workspace root.
const CRD_FILE: &str = "manifests/00-crds.yaml";

fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

/// Runs a benchmark target in release mode, passing the filter through.
fn bench(args: &[String]) -> ExitCode {
    let (package, target) = match args.first().map(String::as_str) {
        Some("cluster") => ("omniscale-cluster", "cluster"),
        Some("hpa") => ("omniscale-hpa", "cycle"),
        Some("webhook") => ("omniscale-operator", "webhook"),
        Some("vpa") => ("omniscale-vpa", "ingest"),
        Some("nodes") => ("omniscale-operator", "scale_up_latency"),
        Some("nodes-engine") => ("omniscale-nodes", "decide"),
        _ => {
            eprintln!("usage: cargo xtask bench <cluster|hpa|vpa|webhook|nodes|nodes-engine> [FILTER]");
            return ExitCode::from(2);
        }
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args(["bench", "--quiet", "-p", package, "--bench", target, "--"])
        .args(&args[1..])
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") {
        return bench(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("image") {
        return match image::image(&workspace_root()) {
            Ok(tag) => {
                println!("{tag}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask image: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let path = workspace_root().join(CRD_FILE);
    let rendered = match omniscale_api::render_crds_yaml() {
        Ok(text) => text,
        Err(e) => {
            eprintln!("xtask: cannot render CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.first().map(String::as_str) {
        Some("crds") => match std::fs::write(&path, rendered) {
            Ok(()) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("xtask: cannot write {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
        Some("check") => {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed == rendered {
                println!("{CRD_FILE} is up to date");
                ExitCode::SUCCESS
            } else {
                eprintln!("{CRD_FILE} differs from the Rust types: run `cargo xtask crds` and commit the result");
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <crds|check|image|bench>\n  crds   regenerate {CRD_FILE}\n  check  fail if {CRD_FILE} has drifted\n  image  build and check the container image (buildah, FROM scratch, static binary)\n  bench cluster [FILTER]  scheduling benchmarks (JSON lines)\n  bench hpa [FILTER]      horizontal sync cycle, 10,000 Autoscalers (JSON lines)\n  bench vpa [FILTER]      vertical recommender round, 100,000 containers (JSON lines)\n  bench webhook [FILTER]  admission webhook HTTPS latency, 500 requests/s (JSON lines)\n  bench nodes             unschedulable pod to SetDesiredCapacity latency on the simulated cluster (JSON line)\n  bench nodes-engine [FILTER]  one Auto Scaling Group engine loop at 1,000 nodes and 30,000 pods (JSON lines)"
            );
            ExitCode::from(2)
        }
    }
}
