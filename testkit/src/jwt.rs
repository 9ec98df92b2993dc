//! Reading a JWT's parts without verifying it (tests only).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

fn part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT part");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// The payload.
pub fn claims(token: &str) -> Value {
    part(token, 1)
}

/// The header.
pub fn header(token: &str) -> Value {
    part(token, 0)
}

/// The `sub` claim.
pub fn sub_of(token: &str) -> String {
    claims(token)["sub"].as_str().expect("sub").to_string()
}

/// The `sid` claim.
pub fn sid_of(token: &str) -> String {
    claims(token)["sid"].as_str().expect("sid").to_string()
}
