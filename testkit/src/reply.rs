//! An HTTP answer, read whole, with the assertions every suite needs.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The JSON body (`Null` when empty). A non-JSON body fails the test.
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    /// Asserts the one error shape with the given status and code: `error` and `message`,
    /// and nothing else but `"active": false` (from `/verify`) or an `error_id` (a 500).
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.error(), code, "body: {}", self.body);
        assert!(self.body["message"].is_string(), "body: {}", self.body);
        for (key, value) in self.body.as_object().expect("an object") {
            let allowed = match key.as_str() {
                "error" | "message" => true,
                "active" => value == &Value::Bool(false),
                "error_id" => status == 500,
                _ => false,
            };
            assert!(
                allowed,
                "unexpected {key:?} in the error body: {}",
                self.body
            );
        }
    }

    /// Asserts a 401 carrying `code` in the body and in the Bearer challenge (RFC 6750).
    #[track_caller]
    pub fn assert_unauthorized(&self, code: &str) {
        self.assert_error(401, code);
        assert_eq!(
            self.header("www-authenticate"),
            Some(format!("Bearer error=\"invalid_token\", error_description=\"{code}\"").as_str()),
            "body: {}",
            self.body
        );
    }

    /// Asserts the fail-closed answer: 503 with `Retry-After`.
    #[track_caller]
    pub fn assert_unavailable(&self) {
        self.assert_error(503, "service_unavailable");
        assert!(self.header("retry-after").is_some(), "no Retry-After");
    }

    /// A string field of the body.
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {}", self.body))
            .to_string()
    }
}

/// Sends a request and reads the whole answer; a failed connection fails the test.
pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    try_send(req).await.expect("request")
}

/// Sends a request and reads the whole answer, or says why there is none (the server is
/// down, the connection broke).
pub async fn try_send(req: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "non-JSON body ({status}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}
