//! `auth-service/openapi.yaml` describes exactly the routes the service serves: every path and
//! method it lists is routed (on the listener it names), every other method on those paths is
//! 405 with an `Allow` header naming exactly the documented ones, and every route in
//! `src/http/routes.rs` is listed; every error code of `src/http/error.rs` is documented.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};

const SPEC: &str = include_str!("../../openapi.yaml");
const ROUTES_RS: &str = include_str!("../../src/http/routes.rs");
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn spec() -> serde_norway::Value {
    serde_norway::from_str(SPEC).expect("openapi.yaml parses")
}

/// path → methods, as the spec lists them.
fn spec_routes() -> BTreeMap<String, BTreeSet<String>> {
    let spec = spec();
    let paths = spec["paths"].as_mapping().expect("paths");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| m.to_string())
                .collect();
            (path.as_str().unwrap().to_string(), methods)
        })
        .collect()
}

/// path → methods, as `routes.rs` routes them: `resource("/p").route(web::get()…)`.
fn served_routes() -> BTreeMap<String, BTreeSet<String>> {
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in ROUTES_RS.lines() {
        if let Some(rest) = line.split("resource(\"").nth(1) {
            current = rest.split('"').next().map(str::to_string);
        }
        if let Some(path) = &current {
            for m in METHODS {
                if line.contains(&format!("web::{m}()")) {
                    routes
                        .entry(path.clone())
                        .or_default()
                        .insert(m.to_string());
                }
            }
        }
    }
    routes
}

#[test]
fn every_served_route_is_documented_and_nothing_else() {
    let served = served_routes();
    assert!(
        served.len() >= 15,
        "the route scan found too little: {served:?}"
    );
    assert_eq!(spec_routes(), served);
}

#[test]
fn every_error_code_is_documented() {
    let spec = spec();
    let documented: BTreeSet<&str> = spec["components"]["schemas"]["Error"]["properties"]["error"]
        ["enum"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The table's rows read `Variant => (S::STATUS, "code"),`.
    let source = include_str!("../../src/http/error.rs");
    let table = source.split("fn status_and_code").nth(1).unwrap();
    let table = table.split("\n}\n").next().unwrap();
    let codes: BTreeSet<&str> = table
        .lines()
        .filter(|l| l.contains("=> (S::"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(codes.len() >= 15, "{codes:?}");
    assert_eq!(documented, codes);
}

#[actix_web::test]
async fn documented_routes_are_served_on_their_listener() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let any_id = uuid::Uuid::new_v4().to_string();
    for (path, methods) in spec_routes() {
        let base = if [
            "/verify",
            "/metrics",
            "/oauth/introspect",
            "/internal/user-events",
        ]
        .contains(&path.as_str())
        {
            &app.internal
        } else {
            &app.public
        };
        let url = format!("{base}{}", path.replace("{id}", &any_id));
        for m in METHODS {
            let method = reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let request = app
                .client
                .request(method, &url)
                .json(&serde_json::json!({}));
            if path == "/metrics" && methods.contains(m) {
                // Text, not JSON: only its status is compared here (tests/api/metrics.rs reads it).
                let status = request.send().await.unwrap().status();
                assert_eq!(status, 200, "{m} {path}");
                continue;
            }
            let r = app.send(request).await;
            if methods.contains(m) {
                // Unauthenticated and with an empty body: refused, but by the handler.
                assert!(
                    !matches!(r.status.as_u16(), 404 | 405 | 500),
                    "{m} {path}: {} {}",
                    r.status,
                    r.body
                );
            } else {
                r.assert_error(405, "method_not_allowed");
                let allow: Vec<String> = methods.iter().map(|m| m.to_uppercase()).collect();
                let mut listed: Vec<&str> =
                    r.header("allow").unwrap_or_default().split(", ").collect();
                listed.sort_unstable();
                assert_eq!(listed, allow, "Allow of {path}");
            }
        }
    }
}
