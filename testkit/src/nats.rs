//! A NATS server (with JetStream) of a test's own: the machine's `nats-server` on a free
//! port with its store in a temporary directory, so the test can stop, kill and restart the
//! broker without touching the shared one at `NATS_URL`.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub struct NatsServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

/// `NATS_SERVER_BIN`, else `nats-server` on the `PATH`, else Debian's `/usr/sbin/nats-server`.
fn nats_server_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients; panics with its log if it cannot.
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            dir: tempfile::tempdir().expect("tempdir"),
            bin: nats_server_bin(),
            port: free_port(),
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`; stays the same across restarts.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store_dir())
            .arg("-l")
            .arg(self.log_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until a client connection gets the server's `INFO` greeting (the server only
    /// listens for clients once JetStream is up).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "nats-server exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            if greets(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept clients on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the server the way an operator would (SIGTERM, then waits for it to exit). The
    /// port and the store stay, for [`NatsServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    /// Ends the server at once with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store: after [`NatsServer::stop`]
    /// or [`NatsServer::kill`], or (stopping it first) while it runs.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether a server on `port` answers a new connection with its `INFO` line.
fn greets(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).is_ok() && &buf == b"INFO"
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- nats-server log -----\n{}", self.log());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_kills_and_restarts_on_the_same_port_and_store() {
        let mut server = NatsServer::start();
        let url = server.url();
        assert!(greets(server.port));
        assert!(
            server.store_dir().join("jetstream").is_dir(),
            "JetStream is on"
        );
        server.stop();
        assert!(!greets(server.port), "stopped");
        server.restart();
        assert_eq!(server.url(), url);
        assert!(greets(server.port));
        server.kill();
        assert!(!greets(server.port), "killed");
        server.restart();
        assert!(greets(server.port));
        server.restart();
        assert!(greets(server.port));
    }
}
