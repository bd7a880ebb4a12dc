//! Child processes that cannot outlive the process that started them.
//!
//! Each component runs under `sh`, which starts it in the background while a watcher reads the
//! shell's stdin, a pipe whose write end only this process holds. When this process exits for
//! any reason (or [`Guarded`] is dropped) the pipe closes, the read returns, and the watcher
//! stops the component: SIGTERM, then SIGKILL after five seconds. No `unsafe`
//! (`prctl`/`pre_exec`) needed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::{Error, Result, io};

/// Starts `"$@"` detached from our stdin and exits with it; a watcher stops it (TERM, then KILL
/// after five seconds) once our stdin reaches EOF. The watcher reads stdin through fd 3: a
/// background list's own stdin is `/dev/null` in a shell without job control.
const GUARD: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
child=$!
( cat <&3 >/dev/null; kill -TERM "$child" 2>/dev/null; sleep 5; kill -KILL "$child" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$child"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// A component running under a guard shell.
#[derive(Debug)]
pub struct Guarded {
    name: &'static str,
    log: PathBuf,
    child: Child,
    /// Dropping it closes the pipe, which stops the component.
    stdin: Option<ChildStdin>,
}

impl Guarded {
    /// Runs `bin args...`, logging to `<dir>/<name>.log`.
    pub fn spawn(name: &'static str, bin: &Path, args: &[String], dir: &Path) -> Result<Guarded> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io("duplicating a log handle"))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("starting {}", bin.display())))?;
        let stdin = child.stdin.take();
        Ok(Guarded { name, log, child, stdin })
    }

    /// The component's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the component has exited (its guard exits with it and stays a zombie until
    /// dropped, so `/proc` tells without `&mut self`).
    pub fn exited(&self) -> bool {
        !Path::new(&format!("/proc/{}", self.child.id())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
                .map(|s| s.split_whitespace().nth(2) == Some("Z"))
                .unwrap_or(true)
    }

    /// A not-ready error carrying the end of the component's log.
    pub fn not_ready(&self, limit: Duration) -> Error {
        Error::NotReady { component: self.name, seconds: limit.as_secs(), log: tail(&self.log, 30) }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A guard that removes `dir` once this process is gone (the components are stopped by their
/// own guards at the same moment; removing files under a stopping process is harmless).
pub fn cleanup(dir: &Path) -> std::io::Result<Guarded> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"cat >/dev/null; sleep 6; rm -rf -- "$1""#)
        .arg("sh")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let stdin = child.stdin.take();
    Ok(Guarded { name: "cleanup", log: dir.join("cleanup.log"), child, stdin })
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether an etcd answers `GET /health` healthily on 127.0.0.1:2379.
pub fn etcd_healthy() -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], 2379).into(), Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_stops_its_process() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("omniscale-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io("mkdir"))?;
        let g = Guarded::spawn("sleeper", Path::new("sleep"), &["300".into()], &dir)?;
        std::thread::sleep(Duration::from_millis(200));
        assert!(!g.exited());
        let started = std::time::Instant::now();
        drop(g);
        // TERM ends `sleep` at once: the guard's wait returns well before the KILL fallback.
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn a_guard_reports_an_exited_process_and_its_log() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("omniscale-guard-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io("mkdir"))?;
        let g = Guarded::spawn("failing", Path::new("sh"), &["-c".into(), "echo boom; exit 3".into()], &dir)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !g.exited() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = tail(&g.log, 5);
        assert!(log.contains("boom"), "{log}");
        let Error::NotReady { component, log, .. } = g.not_ready(Duration::from_secs(1)) else {
            return Err(Error::Other("expected NotReady".into()));
        };
        assert_eq!(component, "failing");
        assert!(log.contains("boom"));
        drop(g);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
