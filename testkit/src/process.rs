//! The workspace's binaries as child processes on free ports.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sleep_secs;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A binary of another workspace member, built for the profile and target directory the
/// running test binary was built with.
///
/// Cargo only exposes `CARGO_BIN_EXE_*` for a package's own binaries, so this builds the
/// other package's binary itself, once per test process, with `cargo build -p PACKAGE --bin
/// BIN --tests`. `--tests` makes cargo resolve features exactly as `cargo test --workspace`
/// does (dev-dependencies included), so after that command this is a no-op that reuses the
/// very binary it built. From a clean clone, or after the package changed, it (re)builds, so
/// a stale binary is never tested. (Cargo releases its build-directory lock before it runs
/// tests, so this nested build does not wait on the outer one.)
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(bin) {
        return path.clone();
    }
    // <target-dir>/[<triple>/]<profile-dir>/deps/<this test binary>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary is in <target>/<profile>/deps");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(other) => other.to_string(),
        None => panic!("cannot tell the profile from {}", exe.display()),
    };
    let mut cmd = Command::new(env!("CARGO"));
    // Cargo gives a test process its own package's variables (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, OUT_DIR …). Some build scripts (ring's) rerun when one of those
    // changes, so a nested build that inherited them would rebuild ring and everything above
    // it, and the next outer build would rebuild it all back: a nested build sees the
    // environment an outer `cargo` sees.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let package_specific = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if package_specific {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "-p",
        package,
        "--bin",
        bin,
        "--tests",
        "--profile",
        &profile,
    ]);
    let above = profile_dir.parent().expect("target dir");
    if !is_triple_dir(above) {
        cmd.arg("--target-dir").arg(above);
    } else {
        // Cross-compiled layout: <target-dir>/<triple>/<profile>.
        let triple = above.file_name().and_then(|n| n.to_str()).expect("triple");
        cmd.args(["--target", triple])
            .arg("--target-dir")
            .arg(above.parent().expect("target dir"));
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} was not built", path.display());
    built.insert(bin.to_string(), path.clone());
    path
}

/// Whether `dir` (the directory above the profile's) is `<target-dir>/<triple>`, the layout of
/// a build with `--target`, rather than the target directory itself. Cargo tags a target
/// directory it creates with `CACHEDIR.TAG`; but one that existed before the first build (the
/// test script installs the interop clients under `target/` first) has none, so without the
/// tag the name decides: a target triple has at least two dashes (`x86_64-unknown-linux-gnu`),
/// and is not the name of a target directory.
fn is_triple_dir(dir: &Path) -> bool {
    if dir.join("CACHEDIR.TAG").exists() {
        return false;
    }
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.matches('-').count() >= 2)
}

/// A port nobody listens on right now.
/// A port nothing listens on, for a child process to bind. Taken below the kernel's
/// ephemeral range (`ip_local_port_range`, 32768 and up here), where `bind(0)` and the
/// outgoing connections of the many tests running at once never land, so the port stays
/// free between this check and the child's bind; and handed out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    // Each test binary starts at its own offset, so consecutive binaries (and a port a
    // previous one left in TIME_WAIT) rarely meet.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

pub type Env = BTreeMap<String, String>;

pub fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A binary running with exactly the environment it is given (nothing of the test process's
/// own environment leaks in). Its output is captured, printed if the test fails, and can be
/// searched (for instance for tokens, which must never appear).
pub struct Service {
    pub name: &'static str,
    bin: PathBuf,
    /// Arguments, replaceable between restarts.
    pub args: Vec<String>,
    pub env: Env,
    cwd: PathBuf,
    /// URLs that answer 200 once the service is up.
    ready: Vec<String>,
    child: Option<Child>,
    output: Arc<Mutex<String>>,
}

impl Service {
    pub async fn start(
        name: &'static str,
        bin: &Path,
        env: Env,
        cwd: &Path,
        ready: Vec<String>,
    ) -> Service {
        Service::start_with_args(name, bin, &[], env, cwd, ready).await
    }

    /// [`Service::start`] with command-line arguments.
    pub async fn start_with_args(
        name: &'static str,
        bin: &Path,
        args: &[&str],
        env: Env,
        cwd: &Path,
        ready: Vec<String>,
    ) -> Service {
        let mut service = Service {
            name,
            bin: bin.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            cwd: cwd.to_path_buf(),
            ready,
            child: None,
            output: Arc::default(),
        };
        service.spawn().await;
        service
    }

    async fn spawn(&mut self) {
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for stream in [out, err] {
            let output = self.output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap_or_else(|e| e.into_inner());
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in self.ready.clone() {
            loop {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    // Let the reader threads drain what it wrote before it died.
                    sleep_secs(0.3).await;
                    panic!(
                        "{} exited during start-up ({status}):\n{}",
                        self.name,
                        self.output()
                    );
                }
                if let Ok(r) = client.get(&url).send().await
                    && r.status() == 200
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not answer {url}:\n{}",
                    self.name,
                    self.output()
                );
                sleep_secs(0.05).await;
            }
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Ends the process at once with SIGKILL (as a crash or `docker kill` would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same environment, changed by `overrides`.
    pub async fn restart_with(&mut self, overrides: &[(&str, &str)]) {
        self.stop();
        for (k, v) in overrides {
            self.env.insert(k.to_string(), v.to_string());
        }
        self.spawn().await;
    }

    pub async fn restart(&mut self) {
        self.restart_with(&[]).await
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asserts that none of `secrets` ever reached the process's output.
    #[track_caller]
    pub fn assert_never_logged(&self, secrets: &[&str]) {
        let out = self.output();
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(
                !out.contains(secret),
                "{} logged a token or secret:\n{out}",
                self.name
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("----- {} output -----\n{}", self.name, self.output());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_dir_without_its_tag_is_not_taken_for_a_triple() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("target");
        std::fs::create_dir_all(target.join("interop")).unwrap();
        assert!(!is_triple_dir(&target));
        let triple = target.join("x86_64-unknown-linux-gnu");
        std::fs::create_dir_all(&triple).unwrap();
        assert!(is_triple_dir(&triple));
        std::fs::write(
            target.join("CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n",
        )
        .unwrap();
        assert!(!is_triple_dir(&target));
    }
}
