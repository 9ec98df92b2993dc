//! deploy/nginx/auth_request.conf, run by a real nginx: a service that checks no tokens itself
//! sits behind `auth_request` against the real auth service's /verify.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// The example with its compose host names pointed at this test's processes.
fn render_example(internal: u16, upstream: u16, listen: u16) -> String {
    let text = std::fs::read_to_string(workspace_root().join("deploy/nginx/auth_request.conf"))
        .expect("deploy/nginx/auth_request.conf");
    let mut out = text.clone();
    for (from, to) in [
        (
            "server auth-service:8081;",
            format!("server 127.0.0.1:{internal};"),
        ),
        (
            "server resource-service-example:8090;",
            format!("server 127.0.0.1:{upstream};"),
        ),
        ("listen 8000;", format!("listen 127.0.0.1:{listen};")),
    ] {
        assert_eq!(text.matches(from).count(), 1, "{from} in the example");
        out = out.replace(from, &to);
    }
    out
}

struct Nginx {
    child: std::process::Child,
    url: String,
}

impl Nginx {
    async fn start(dir: &Path, server_conf: &str, port: u16) -> Nginx {
        let d = dir.display();
        std::fs::write(dir.join("auth_request.conf"), server_conf).unwrap();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log stderr crit;\nevents {{}}\nhttp {{\n  access_log off;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n  include {d}/auth_request.conf;\n}}\n"
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
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("nginx exited: {status} (its messages are above)");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Nginx { child, url };
            }
            sleep_secs(0.05).await;
        }
        panic!("nginx did not listen on {port}");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn auth_request_example_guards_an_upstream() {
    let mut stack = Stack::start(Backend::Sqlite, &[], &[]).await;
    let upstream = FakeVerify::start(FakeAnswer::EchoHeaders);
    let upstream_port: u16 = upstream
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/verify")
        .parse()
        .unwrap();
    let internal_port: u16 = stack.internal.rsplit(':').next().unwrap().parse().unwrap();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(
        dir.path(),
        &render_example(internal_port, upstream_port, port),
        port,
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
