//! The demo page in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini), against both real binaries. The page is served by the
//! resource service; the auth service is another origin on the same host (so the same
//! site, which `SameSite=Strict` needs). Each step's screenshot is kept under
//! `target/browser-artifacts/<test>/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::*;

/// Short-lived access tokens, so the test can wait one out.
const ACCESS_TTL_SECS: u64 = 3;

/// chromedriver and, behind it, a headless Chromium of its own (a fresh profile).
struct Browser {
    client: Client,
    _driver: Service,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    step: usize,
}

impl Browser {
    async fn start(test: &str) -> Browser {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Chromium is not installed (tools/test.sh installs Debian's chromium)");
        let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromedriver is not installed (tools/test.sh installs chromium-driver)");
        let profile = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let home = profile.path().display().to_string();
        let driver = Service::start_with_args(
            "chromedriver",
            Path::new(driver_bin),
            &[&format!("--port={port}")],
            env(&[("HOME", &home), ("PATH", "/usr/bin:/bin")]),
            profile.path(),
            vec![format!("http://127.0.0.1:{port}/status")],
        )
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Runs as root in CI, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=900,900",
                    format!("--user-data-dir={}/chromium", home),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with headless Chromium");
        let shots = artifacts_dir().join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).expect("artifacts directory");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
            shots,
            step: 0,
        }
    }

    /// Keeps a screenshot of the page as it is now.
    async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{:02}-{name}.png", self.step));
        std::fs::write(&path, png).expect("write screenshot");
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Runs an async function body (`await` allowed) in the page and returns its value.
    async fn js_async(&self, body: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];\
             (async () => {{ {body} }})().then(done, (e) => done('threw: ' + e));"
        );
        self.client
            .execute_async(&script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"))
    }

    /// Waits (at most 10 s) until the page's `body[data-state]` is `state` and its
    /// start-up is done.
    async fn wait_state(&self, state: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self
                .js("return [document.body.dataset.state, document.body.dataset.ready || '', document.getElementById('status').textContent];")
                .await;
            if now[0] == state && now[1] == "true" {
                return;
            }
            assert!(
                Instant::now() < until,
                "page never reached {state:?}: {now}"
            );
            sleep_secs(0.1).await;
        }
    }

    /// Waits until the status line reads `text`.
    async fn wait_status(&self, text: &str) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.status().await;
            if status.contains(text) {
                return;
            }
            assert!(
                Instant::now() < until,
                "status never said {text:?}: {status:?}"
            );
            sleep_secs(0.1).await;
        }
    }

    async fn status(&self) -> String {
        self.js("return document.getElementById('status').textContent;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn fill(&self, id: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn click(&self, id: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

    /// The posts' texts, as the page shows them.
    async fn posts(&self) -> Vec<String> {
        let v = self
            .js("return [...document.querySelectorAll('#posts li span')].map(s => s.textContent);")
            .await;
        serde_json::from_value(v).expect("a list of texts")
    }

    async fn wait_posts(&self, expected: &[&str]) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let posts = self.posts().await;
            if posts == expected {
                return;
            }
            assert!(
                Instant::now() < until,
                "posts {posts:?}, expected {expected:?}"
            );
            sleep_secs(0.1).await;
        }
    }

    async fn refreshes(&self) -> u64 {
        let v = self.js("return document.body.dataset.refreshes;").await;
        v.as_str().and_then(|s| s.parse().ok()).expect("a count")
    }

    /// The refresh-token cookie as the browser keeps it (WebDriver sees HttpOnly cookies).
    async fn refresh_cookie(&self) -> Option<fantoccini::cookies::Cookie<'static>> {
        self.client
            .get_all_cookies()
            .await
            .expect("cookies")
            .into_iter()
            .find(|c| c.name().ends_with("refresh_token"))
    }
}

/// `target/browser-artifacts`, beside the binaries of this build.
fn artifacts_dir() -> PathBuf {
    Path::new(RESOURCE_SERVICE_BIN)
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("browser-artifacts"))
        .expect("the target directory")
}

/// `auth_refreshes_total` summed over outcomes, from the auth service's /metrics.
async fn refreshes_total(stack: &Stack) -> f64 {
    let text = stack
        .client
        .get(format!("{}/metrics", stack.internal))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("auth_refreshes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

both_backends! {
    async fn the_demo_page_in_a_real_browser(b: Backend) {
        let ttl = format!("{ACCESS_TTL_SECS}s");
        let stack = Stack::start(
            b,
            &[
                ("AUTH__TOKENS__ACCESS_TTL", &ttl),
                ("AUTH__CORS__ALLOWED_ORIGINS", "{rs}"),
            ],
            &[("RS__DEMO__AUTH_URL", "{public}")],
        )
        .await;
        let mut browser = Browser::start(&format!("demo-{b:?}").to_lowercase()).await;
        let page = format!("{}/", stack.rs);

        // 1. The page, signed out; sign up and log in (cookie mode).
        browser.client.goto(&page).await.expect("open the page");
        browser.wait_state("signed-out").await;
        browser.shot("signed-out").await;
        browser.fill("signup-username", "alice").await;
        browser.fill("signup-password", PASSWORD).await;
        browser.click("signup").await;
        browser.wait_status("Signed up as alice").await;
        browser.shot("signed-up").await;
        browser.fill("login-password", PASSWORD).await;
        browser.click("login").await;
        browser.wait_state("signed-in").await;
        let who = browser.js("return document.getElementById('who').textContent;").await;
        assert_eq!(who, "alice");
        browser.shot("logged-in").await;

        // The refresh token is a cookie the browser holds and no script can read.
        let cookie = browser.refresh_cookie().await.expect("the refresh-token cookie");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
        assert_eq!(cookie.secure(), Some(true), "Chromium keeps Secure cookies for http://127.0.0.1");
        assert_eq!(cookie.name(), "__Host-refresh_token");
        let first_cookie = cookie.value().to_string();
        let visible = browser.js("return document.cookie;").await;
        assert!(!visible.as_str().unwrap().contains("refresh_token"), "document.cookie: {visible}");
        assert!(!visible.as_str().unwrap().contains(&first_cookie));

        // 2. Add a post.
        browser.fill("post-text", "hello from the browser").await;
        browser.click("post-add").await;
        browser.wait_posts(&["hello from the browser"]).await;
        browser.shot("posted").await;

        // 3. Reload: the access token (memory only) is gone; the cookie signs the page in
        // again, silently, and rotates.
        browser.client.refresh().await.expect("reload");
        browser.wait_state("signed-in").await;
        browser.wait_posts(&["hello from the browser"]).await;
        browser.shot("reloaded-still-signed-in").await;
        let rotated = browser.refresh_cookie().await.expect("the cookie");
        assert_ne!(rotated.value(), first_cookie, "the refresh rotated the cookie");
        let visible = browser.js("return document.cookie;").await;
        assert!(!visible.as_str().unwrap().contains("refresh_token"), "document.cookie: {visible}");

        // 4. Let the access token expire, then act: the page refreshes once, silently, and
        // the post goes through.
        let before = browser.refreshes().await;
        sleep_secs(ACCESS_TTL_SECS as f64 + 1.5).await;
        browser.fill("post-text", "after the token expired").await;
        browser.click("post-add").await;
        browser.wait_posts(&["after the token expired", "hello from the browser"]).await;
        assert_eq!(browser.refreshes().await, before + 1, "one silent refresh");
        assert_eq!(browser.js("return document.body.dataset.state;").await, "signed-in");
        browser.shot("expired-and-refreshed").await;

        // 5. A page of another origin (same site, not on the allow-list) cannot use the
        // cookie: its silent refresh fails, its login fails, and its direct calls are
        // stopped by the preflight or refused; nothing is refreshed.
        let other_port = free_port();
        let other = format!("http://127.0.0.1:{other_port}");
        let mut other_env = resource_env(other_port, &format!("{}/verify", stack.internal));
        other_env.insert("RS__DEMO__AUTH_URL".into(), stack.public.clone());
        let _other_rs = Service::start(
            "resource-service-example (other origin)",
            Path::new(RESOURCE_SERVICE_BIN),
            other_env,
            stack.dir.path(),
            vec![format!("{other}/healthz")],
        )
        .await;
        let refreshed = refreshes_total(&stack).await;
        let cookie_before = browser.refresh_cookie().await.expect("the cookie").value().to_string();
        browser.client.goto(&format!("{other}/")).await.expect("open the other origin");
        browser.wait_state("signed-out").await;
        browser.shot("other-origin-signed-out").await;
        browser.fill("login-username", "alice").await;
        browser.fill("login-password", PASSWORD).await;
        browser.click("login").await;
        browser.wait_status("cannot be reached").await;
        assert_eq!(browser.js("return document.body.dataset.state;").await, "signed-out");
        browser.shot("other-origin-login-refused").await;
        let auth = stack.public.clone();
        let direct = browser
            .js_async(&format!(
                "try {{ await fetch('{auth}/refresh', {{method: 'POST', credentials: 'include', \
                   headers: {{'content-type': 'application/json', 'x-requested-with': 'x'}}, body: '{{}}'}}); \
                   return 'answered'; }} catch (e) {{ return 'blocked'; }}"
            ))
            .await;
        assert_eq!(direct, "blocked", "the preflight of another origin must fail");
        // Without the custom header there is no preflight, but the service refuses it.
        let simple = browser
            .js_async(&format!(
                "const r = await fetch('{auth}/refresh', {{method: 'POST', credentials: 'include', \
                   mode: 'no-cors', headers: {{'content-type': 'text/plain'}}, body: '{{}}'}}); return r.type;"
            ))
            .await;
        assert_eq!(simple, "opaque");
        assert_eq!(refreshes_total(&stack).await, refreshed, "another origin refreshed");
        let cookie_after = browser.refresh_cookie().await.expect("the cookie survives").value().to_string();
        assert_eq!(cookie_before, cookie_after);

        // 6. Back on the demo's origin: still signed in; log out, reload: signed out.
        browser.client.goto(&page).await.expect("back to the page");
        browser.wait_state("signed-in").await;
        browser.click("logout").await;
        browser.wait_state("signed-out").await;
        browser.wait_status("Logged out").await;
        browser.shot("logged-out").await;
        assert!(browser.refresh_cookie().await.is_none(), "logout clears the cookie");
        browser.client.refresh().await.expect("reload");
        browser.wait_state("signed-out").await;
        browser.shot("reloaded-signed-out").await;

        // No token ever reached either service's log.
        let _ = browser.client.clone().close().await;
        stack.auth.assert_never_logged(&[&first_cookie, &cookie_before]);
        stack.resource.assert_never_logged(&[&first_cookie, &cookie_before]);
    }
}

/// What the page is served with: a strict policy, the auth service's URL from a JSON
/// config, no inline script; other methods on its paths 405 in the error shape.
#[actix_web::test]
async fn the_demo_is_served_under_a_strict_content_security_policy() {
    let stack = Stack::start(
        Backend::Sqlite,
        &[],
        &[("RS__DEMO__AUTH_URL", "https://auth.example.com/")],
    )
    .await;
    let get = |path: &str| stack.client.get(format!("{}{path}", stack.rs)).send();
    let policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                  connect-src 'self' https://auth.example.com; form-action 'none'; \
                  base-uri 'none'; frame-ancestors 'none'";
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/demo/app.js", "text/javascript; charset=utf-8"),
        ("/demo/app.css", "text/css; charset=utf-8"),
    ] {
        let r = get(path).await.expect("answer");
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], content_type, "{path}");
        assert_eq!(h["content-security-policy"], policy, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = r.text().await.expect("body");
        assert!(!body.is_empty());
    }
    let html = get("/").await.expect("answer").text().await.expect("body");
    assert!(html.contains(r#"<script src="/demo/app.js" defer></script>"#));
    let r = send(stack.client.get(format!("{}/demo/config.json", stack.rs))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"auth_url": "https://auth.example.com"}));
    send(stack.client.post(format!("{}/", stack.rs)))
        .await
        .assert_error(405, "method_not_allowed");
    send(stack.client.get(format!("{}/demo/nothing", stack.rs)))
        .await
        .assert_error(404, "not_found");
}
