//! The nginx examples under deploy/nginx/, run by a real nginx on loopback: auth_request.conf
//! (a service that checks no tokens itself sits behind `auth_request` against the real auth
//! service's /verify) and lb.conf (the load balancer of docker-compose.yml in front of two
//! auth-service replicas on one PostgreSQL database).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// nginx (with ngx_http_auth_request_module, as Debian's and the official images have it):
/// `$NGINX`, else on PATH, else /usr/sbin/nginx. Required: this test fails without it.
fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nginx"))
            .find(|p| p.exists())
    });
    let bin = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(
        bin.exists(),
        "nginx is required for the auth_request example test (Debian: apt-get install nginx-light)"
    );
    bin
}

/// `file` (under the workspace root) with each `from` directive, which must be the whole code
/// (comments aside) of exactly one line, replaced by its `to`.
fn render(file: &str, substitutions: &[(String, String)]) -> String {
    let text = std::fs::read_to_string(workspace_root().join(file)).expect(file);
    let mut found = vec![0; substitutions.len()];
    let mut out = String::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or_default().trim();
        match substitutions.iter().position(|(from, _)| from == code) {
            Some(i) => {
                found[i] += 1;
                out.push_str(&line.replacen(code, &substitutions[i].1, 1));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for ((from, _), n) in substitutions.iter().zip(found) {
        assert_eq!(n, 1, "{from} in {file}");
    }
    out
}

/// The example with its compose host names pointed at this test's processes.
fn render_example(internal: u16, upstream: u16, listen: u16) -> String {
    render(
        "deploy/nginx/auth_request.conf",
        &[
            (
                "server auth-service:8081;".into(),
                format!("server 127.0.0.1:{internal};"),
            ),
            (
                "server resource-service-example:8090;".into(),
                format!("server 127.0.0.1:{upstream};"),
            ),
            ("listen 8000;".into(), format!("listen 127.0.0.1:{listen};")),
        ],
    )
}

/// deploy/nginx/lb.conf on loopback, as its header describes: the `server HOST:PORT resolve;`
/// line of each of `upstreams` (`("HOST:PORT", loopback ports)`) becomes one
/// `server 127.0.0.1:P;` line per port, and each `listen PORT;` of `listen`
/// (`(PORT, loopback port)`) becomes `listen 127.0.0.1:P;`. Every upstream server and every
/// listener of the file must be among them.
pub fn render_lb(upstreams: &[(&str, &[u16])], listen: &[(u16, u16)]) -> String {
    let mut subs: Vec<(String, String)> = upstreams
        .iter()
        .map(|(host_port, ports)| {
            let servers: Vec<String> = ports
                .iter()
                .map(|p| format!("server 127.0.0.1:{p};"))
                .collect();
            (
                format!("server {host_port} resolve;"),
                servers.join("\n    "),
            )
        })
        .collect();
    subs.extend(
        listen
            .iter()
            .map(|(from, to)| (format!("listen {from};"), format!("listen 127.0.0.1:{to};"))),
    );
    let out = render("deploy/nginx/lb.conf", &subs);
    for line in out
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
    {
        // An upstream server (not a `server {` block) or a listener not on loopback.
        let directive =
            (line.starts_with("server ") && line.ends_with(';')) || line.starts_with("listen ");
        assert!(
            !directive || line.contains(" 127.0.0.1:"),
            "deploy/nginx/lb.conf: {line} was not replaced"
        );
    }
    out
}

/// A private nginx running `server_conf` inside its `http` block.
pub struct Nginx {
    child: std::process::Child,
    dir: PathBuf,
    /// The first listener.
    pub url: String,
}

impl Nginx {
    /// Starts nginx and waits until it listens on each of `ports` (on 127.0.0.1).
    pub async fn start(dir: &Path, server_conf: &str, ports: &[u16]) -> Nginx {
        let d = dir.display();
        std::fs::write(dir.join("site.conf"), server_conf).unwrap();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log stderr crit;\nevents {{}}\nhttp {{\n\
                 log_format test '$request_method $uri $status $upstream_addr';\n\
                 access_log {d}/access.log test;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(nginx_bin())
            .args(["-e", "stderr", "-p"])
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("nginx exited: {status} (its messages are above)");
            }
            if ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                let url = format!("http://127.0.0.1:{}", ports[0]);
                let dir = dir.to_path_buf();
                return Nginx { child, dir, url };
            }
            sleep_secs(0.05).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("nginx did not listen on {ports:?}");
    }
}

impl Nginx {
    /// The access log's lines (`METHOD URI STATUS UPSTREAM-ADDRESSES`) for requests whose
    /// `METHOD URI` is `request`, once there are at least `n` of them (nginx writes a line
    /// just after the response; waits up to 2 s).
    pub async fn logged(&self, request: &str, n: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..40 {
            lines = std::fs::read_to_string(self.dir.join("access.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with(&format!("{request} ")))
                .map(String::from)
                .collect();
            if lines.len() >= n {
                break;
            }
            sleep_secs(0.05).await;
        }
        lines
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port of `http://127.0.0.1:PORT[/path]`.
fn port_of(url: &str) -> u16 {
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[actix_web::test]
async fn auth_request_example_guards_an_upstream() {
    let mut stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let upstream = FakeVerify::start(FakeAnswer::EchoHeaders);
    let upstream_port = port_of(&upstream.url);
    let internal_port = port_of(&stack.internal);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(
        dir.path(),
        &render_example(internal_port, upstream_port, port),
        &[port],
    )
    .await;
    let client = reqwest::Client::new();
    let get = |token: Option<&str>| {
        let mut req = client
            .get(format!("{}/anything", nginx.url))
            // A client cannot claim an identity: nginx sets these headers itself.
            .header("x-auth-user-id", "forged")
            .header("x-auth-roles", "admin");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req)
    };

    // No token, or a bad one: 401 with /verify's reason; the upstream is never reached.
    get(None).await.assert_unauthorized("invalid_token");
    get(Some("abc.def.ghi"))
        .await
        .assert_unauthorized("invalid_token");
    assert_eq!(upstream.requests(), 0);

    // A good token: through, with the verified identity and not the forged one.
    let (at, rt) = stack.signed_in("alice").await;
    let r = get(Some(&at)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["x-auth-user-id"], claims(&at)["sub"]);
    assert_eq!(r.body["x-auth-user"], "alice");
    assert_eq!(r.body["x-auth-roles"], "user");
    assert_eq!(upstream.requests(), 1);

    // Logged out: refused at once, with the reason.
    let r = stack
        .auth_post("/logout", json!({"refresh_token": rt}))
        .await;
    assert_eq!(r.status, 204);
    get(Some(&at)).await.assert_unauthorized("token_revoked");

    // Auth service down: fail closed.
    let (at2, _) = stack.login("alice").await;
    assert_eq!(get(Some(&at2)).await.status, 200);
    stack.auth.stop();
    get(Some(&at2)).await.assert_unavailable();
    assert_eq!(upstream.requests(), 2);
}

#[actix_web::test]
async fn auth_request_example_with_require_client() {
    use base64::Engine;
    const SECRET: &str = "nginx-secret-0123456789abcdef0123456789abcdef";
    let stack = Stack::start(
        Backend::Sqlite,
        &[("AUTH__VERIFY__REQUIRE_CLIENT", "true")],
        &[],
    )
    .await;
    let out = stack.auth_cli(
        &[
            "client",
            "create",
            "--client-id",
            "edge-nginx",
            "--introspect",
        ],
        &format!("{SECRET}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let upstream = FakeVerify::start(FakeAnswer::EchoHeaders);
    let upstream_port = port_of(&upstream.url);
    let internal_port = port_of(&stack.internal);
    let (at, _) = stack.signed_in("alice").await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("edge-nginx:{SECRET}"));
    for (credentials, status) in [(None, 503), (Some(basic), 200)] {
        let port = free_port();
        let mut conf = render_example(internal_port, upstream_port, port);
        if let Some(c) = &credentials {
            let commented =
                "# proxy_set_header X-Client-Authorization \"Basic cG9zdHMtYXBpOnNlY3JldA==\";";
            assert!(conf.contains(commented));
            conf = conf.replace(
                commented,
                &format!("proxy_set_header X-Client-Authorization \"Basic {c}\";"),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let nginx = Nginx::start(dir.path(), &conf, &[port]).await;
        let r = send(
            reqwest::Client::new()
                .get(format!("{}/anything", nginx.url))
                .bearer_auth(&at),
        )
        .await;
        assert_eq!(r.status, status, "{}", r.body);
        if status == 503 {
            // nginx itself was refused, not the user's token: 503, never a 401 that would
            // send the user to log in (nginx copies the subrequest's Basic challenge onto
            // the answer; on a 503 no browser prompts for it).
            r.assert_unavailable();
            assert_eq!(upstream.requests(), 0);
        } else {
            assert_eq!(r.body["x-auth-user"], "alice");
        }
    }
}

/// The upstream addresses of access-log lines, one string per request (`A` or `A, B` after a
/// retry).
fn upstreams(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .collect()
}

#[actix_web::test]
async fn lb_spreads_requests_over_replicas_and_passes_the_client_address() {
    // Two replicas as compose runs them: one PostgreSQL database, one key directory, and the
    // balancer (here 127.0.0.1, like every client on loopback) as their trusted proxy.
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres, dir.path());
    let mut replicas = Vec::new();
    let (mut public, mut internal) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let (p, i) = (free_port(), free_port());
        let mut env = auth_env(dir.path(), &db.url, p, i);
        env.extend(crate::support::env(&[
            ("AUTH__SERVER__TRUSTED_PROXIES", "127.0.0.1"),
            ("AUTH__REVOCATION__POLL_INTERVAL", "200ms"),
        ]));
        let ready = vec![
            format!("http://127.0.0.1:{p}/readyz"),
            format!("http://127.0.0.1:{i}/healthz"),
        ];
        replicas
            .push(Service::start("auth-service", auth_service_bin(), env, dir.path(), ready).await);
        public.push(p);
        internal.push(i);
    }
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let (lb_public, lb_internal) = (free_port(), free_port());
    let conf = render_lb(
        &[
            ("auth-service:8080", &public),
            ("auth-service:8081", &internal),
        ],
        &[(8080, lb_public), (8081, lb_internal)],
    );
    let nginx_dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(nginx_dir.path(), &conf, &[lb_public, lb_internal]).await;
    let verify_url = format!("http://127.0.0.1:{lb_internal}/verify");
    let client = reqwest::Client::new();
    let creds = json!({"username": "alice", "password": PASSWORD});
    let r = send(client.post(format!("{}/register", nginx.url)).json(&creds)).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // Round robin: four logins in a row alternate between the replicas, all on one database.
    let login = |client: &reqwest::Client| {
        send(
            client
                .post(format!("{}/login", nginx.url))
                // Written by the client: only the part right of the last trusted hop counts.
                .header("x-forwarded-for", "198.51.100.1, 203.0.113.9")
                .json(&creds),
        )
    };
    let mut tokens = Vec::new();
    for _ in 0..4 {
        let r = login(&client).await;
        assert_eq!(r.status, 200, "{}", r.body);
        tokens.push((r.str("access_token"), r.str("refresh_token")));
    }
    let logins = upstreams(&nginx.logged("POST /login", 4).await);
    for pair in logins.windows(2) {
        assert_ne!(pair[0], pair[1], "not round robin: {logins:?}");
    }
    let replica_addrs: BTreeSet<String> = public.iter().map(|p| addr(*p)).collect();
    assert_eq!(logins.into_iter().collect::<BTreeSet<_>>(), replica_addrs);
    // X-Forwarded-For reaches the replicas with the balancer's peer appended. From 127.0.0.1
    // (the balancer's own, trusted address) the client's rightmost entry is the first
    // untrusted hop; from 127.0.0.2 (untrusted) it is the peer the balancer saw, and the
    // client's own entries cannot stand in for it.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = login(&elsewhere).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (at, rt) = tokens[0].clone();
    let r = send(
        client
            .get(format!("{}/me/sessions", nginx.url))
            .bearer_auth(&at),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut ips: Vec<&str> = r.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ip"].as_str().unwrap())
        .collect();
    ips.sort_unstable();
    assert_eq!(
        ips,
        [
            "127.0.0.2",
            "203.0.113.9",
            "203.0.113.9",
            "203.0.113.9",
            "203.0.113.9"
        ]
    );

    // /verify through the internal listener, answered by both replicas (same keys).
    for _ in 0..2 {
        let r = send(client.get(&verify_url).bearer_auth(&at)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-auth-user"), Some("alice"));
    }
    let verifies = upstreams(&nginx.logged("GET /verify", 2).await);
    let internal_addrs: BTreeSet<String> = internal.iter().map(|p| addr(*p)).collect();
    assert_eq!(
        verifies.into_iter().collect::<BTreeSet<_>>(),
        internal_addrs
    );
    send(client.get(&verify_url).bearer_auth("abc.def.ghi"))
        .await
        .assert_unauthorized("invalid_token");

    // A logout on one replica is refused by both (the other picks it up from the database).
    let r = send(
        client
            .post(format!("{}/logout", nginx.url))
            .json(&json!({"refresh_token": rt})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    // Asked through the balancer until two answers in a row (round robin: one from each
    // replica) are token_revoked.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut asked, mut refused_in_a_row) = (3, 0); // two answers and the bad token so far
    while refused_in_a_row < 2 {
        let r = send(client.get(&verify_url).bearer_auth(&at)).await;
        asked += 1;
        if r.status == 200 {
            refused_in_a_row = 0;
            assert!(
                Instant::now() < deadline,
                "a replica still accepts the token 10 s after the logout"
            );
            sleep_secs(0.05).await;
        } else {
            r.assert_unauthorized("token_revoked");
            refused_in_a_row += 1;
        }
    }
    let verifies = upstreams(&nginx.logged("GET /verify", asked).await);
    assert_eq!(
        verifies[verifies.len() - 2..]
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        internal_addrs,
        "{verifies:?}"
    );

    // A replica gone: idempotent requests that meet it move on to the other one
    // (`proxy_next_upstream error`), on both listeners.
    replicas[0].stop();
    let (at, _) = tokens[1].clone();
    for _ in 0..3 {
        let r = send(client.get(format!("{}/me", nginx.url)).bearer_auth(&at)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = send(client.get(&verify_url).bearer_auth(&at)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for (request, gone, live) in [
        ("GET /me", public[0], public[1]),
        ("GET /verify", internal[0], internal[1]),
    ] {
        let retried = format!("{}, {}", addr(gone), addr(live));
        let lines = nginx.logged(request, 3).await;
        assert!(
            upstreams(&lines).iter().any(|u| u.ends_with(&retried)),
            "no retry on {request}: {lines:?}"
        );
    }
}
