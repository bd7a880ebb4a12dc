//! Helpers for end-to-end tests: a simulated cluster on a background runtime and a `kubectl`
//! pointed at it.

// Test support: failing loudly with context is the point, so panics are allowed here.
#![allow(clippy::panic)]
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, Running, SimOptions};
use omniscale_sim::world::scenario::StaticNodes;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A simulated cluster for one test, with a kubeconfig file for kubectl.
#[derive(Debug)]
pub struct Sim {
    pub running: Option<Running>,
    pub kubeconfig: PathBuf,
    runtime: tokio::runtime::Runtime,
    dir: PathBuf,
}

impl Sim {
    /// Starts a cluster with three m5.large nodes at `speed` times real time.
    pub fn start(name: &str, speed: f64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let mut world = World::default();
        world.static_nodes = vec![StaticNodes::of_type("node", 3, "m5.large")];
        let opts = SimOptions { speed, ..SimOptions::default() };
        let running = runtime
            .block_on(runtime::start(opts, world))
            .unwrap_or_else(|e| panic!("starting the simulated cluster: {e}"));
        let dir = std::env::temp_dir().join(format!("omniscale-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, running.kubeconfig()).unwrap_or_else(|e| panic!("kubeconfig: {e}"));
        Self { running: Some(running), kubeconfig, runtime, dir }
    }

    /// Runs kubectl with `args`, feeding `stdin` if given.
    pub fn kubectl_with_input(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(kubectl());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() });
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("running kubectl ({}): {e}", kubectl()));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).unwrap_or_else(|e| panic!("kubectl stdin: {e}"));
        }
        child.wait_with_output().unwrap_or_else(|e| panic!("kubectl: {e}"))
    }

    /// Runs kubectl and asserts success; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.ok(args, None)
    }

    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with_input(args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kubectl {} failed:\nstdout: {stdout}\nstderr: {stderr}", args.join(" "));
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with_input(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {} unexpectedly succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Polls `f` until it returns true, for at most `limit` of wall time.
    pub fn eventually(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {limit:?} waiting for {what}");
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.runtime.block_on(r.shutdown());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The kubectl to drive: `$KUBECTL`, else the one on PATH.
pub fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// The workspace root, for reading manifests and examples.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
