//! Test support: a real `moto_server` (the AWS mock) on a free loopback port, for tests that
//! drive [`crate::AwsProvider`] — or the whole operator — against the AWS wire protocol instead
//! of an in-memory stand-in.
//!
//! [`server`] starts one server per process on first use and shares it; tests keep apart by
//! using their own group, template and cluster names. The binary is found through
//! `MOTO_SERVER`, then `$CARGO_TARGET_DIR/venv-moto/bin/moto_server` (what `scripts/test`
//! installs), then `PATH`. Nothing here panics: a missing binary or a server that does not come
//! up is a [`MotoError`] saying what to do, and the test decides how to fail.
//!
//! The shared server lives in a `static`, whose `Drop` never runs, so the server is tied to the
//! process through a pipe instead: a small `sh` wrapper kills moto as soon as the pipe's write
//! end closes, which the OS does on exit however the test binary ends.
//!
//! ```no_run
//! # async fn example() -> Result<(), omniscale_aws::moto::MotoError> {
//! let sdk = omniscale_aws::moto::server()?.sdk_config().await;
//! let provider = omniscale_aws::AwsProvider::new(&sdk, omniscale_aws::Options::default());
//! # let _ = provider;
//! # Ok(())
//! # }
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_autoscaling::config::Credentials;

/// The region every [`MotoServer::sdk_config`] uses.
pub const REGION: &str = "us-east-1";

/// How long a starting server gets to answer HTTP.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs moto in the background and, through the pipe on its stdin (kept as fd 3), kills it as
/// soon as that pipe closes. moto's log is removed then too: it is only read if moto dies by
/// itself, for the error message.
const WRAPPER: &str = r#"exec 3<&0
"$0" -H 127.0.0.1 -p "$1" </dev/null >"$2" 2>&1 &
pid=$!
{ cat <&3 >/dev/null; kill "$pid" 2>/dev/null; rm -f "$2"; } &
wait "$pid""#;

/// Why no moto server could be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MotoError(String);

/// A running `moto_server`; dropping it stops the server.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper kill moto; killing the wrapper too is belt and braces.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `moto_server` binary: `MOTO_SERVER`, else `$CARGO_TARGET_DIR/venv-moto/bin/moto_server`,
/// else the first on `PATH`.
pub fn binary() -> Result<PathBuf, MotoError> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(MotoError(format!("MOTO_SERVER={} is not a file", path.display())));
        }
        return Ok(path);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let path = PathBuf::from(dir).join("venv-moto/bin/moto_server");
        if path.is_file() {
            return Ok(path);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let path = dir.join("moto_server");
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(MotoError(
        "moto_server not found: set MOTO_SERVER, or run scripts/test (it installs moto into \
         $CARGO_TARGET_DIR/venv-moto), or `pip install 'moto[server]'`"
            .into(),
    ))
}

fn free_port() -> Result<u16, MotoError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| MotoError(format!("cannot bind a loopback port: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| MotoError(format!("cannot read the bound port: {e}")))
}

fn answers_http(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

impl MotoServer {
    /// Starts a server of its own on a free loopback port and waits (blocking, up to 20 s) until
    /// it answers HTTP. Most tests want the shared [`server`] instead.
    pub fn start() -> Result<Self, MotoError> {
        let binary = binary()?;
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("omniscale-aws-moto-{port}.log"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg(&binary)
            .arg(port.to_string())
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| MotoError(format!("cannot start {}: {e}", binary.display())))?;
        let stdin = child.stdin.take();
        let mut server = MotoServer { port, child, stdin };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if answers_http(port) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(MotoError(format!("{} exited ({status}) before answering:\n{text}", binary.display())));
            }
            if Instant::now() > deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(MotoError(format!(
                    "{} did not answer on port {port} within {START_TIMEOUT:?}:\n{text}",
                    binary.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL, `http://127.0.0.1:<port>`: the endpoint of every AWS service it mocks.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK configuration for this server: its endpoint, [`REGION`] and dummy static
    /// credentials. Build one per async runtime (per test): SDK clients hold connection pools
    /// tied to the runtime that made them.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await
    }
}

static SERVER: OnceLock<Result<MotoServer, MotoError>> = OnceLock::new();

/// The process's shared server, started on first use (blocking, up to 20 s). A failed start is
/// remembered: every later call gets the same error without trying again.
pub fn server() -> Result<&'static MotoServer, MotoError> {
    SERVER.get_or_init(MotoServer::start).as_ref().map_err(Clone::clone)
}
