//! The OAuth 2.0 endpoints, on the same operations as the JSON API: `POST /oauth/token`
//! (RFC 6749: the `refresh_token`, `password` and `client_credentials` grants), `POST /oauth/introspect` (RFC 7662,
//! internal listener) and `POST /oauth/revoke` (RFC 7009). Bodies are
//! `application/x-www-form-urlencoded`; clients authenticate with HTTP Basic
//! (`client_secret_basic`) or with `client_id` and `client_secret` in the body
//! (`client_secret_post`), never both. Errors have RFC 6749's shape,
//! `{"error", "error_description"}`.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;
use serde::Serialize;

use crate::domain::Error;
use crate::domain::clients::Client;
use crate::domain::sessions::{Introspection, IssuedTokens};
use crate::http::extract::{BasicError, MAX_BODY_BYTES, basic_credentials};
use crate::http::{State, form};
use crate::model::ClientInfo;

/// An OAuth error answer (RFC 6749 5.2, RFC 7662, RFC 7009).
#[derive(Debug, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    retry_after: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status).json(ErrorBody {
            error: self.code,
            error_description: &self.description,
        });
        let headers = response.headers_mut();
        if self.code == "invalid_client" {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"auth-service\", charset=\"UTF-8\""),
            );
        }
        if let Some(v) = self
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl From<Error> for OAuthError {
    /// The domain's answer in OAuth terms. A refused token or wrong credentials is an
    /// `invalid_grant`; the service's own troubles keep their meaning and their status.
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::InvalidClient => OAuthError::new(
                S::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            ),
            Error::UnauthorizedClient => OAuthError::new(
                S::BAD_REQUEST,
                "unauthorized_client",
                "this client may not use this grant",
            ),
            Error::InvalidCredentials
            | Error::InvalidToken(_)
            | Error::TokenExpired
            | Error::TokenRevoked
            | Error::TokenReused
            | Error::SessionRevoked => {
                OAuthError::new(S::BAD_REQUEST, "invalid_grant", e.to_string())
            }
            Error::Validation(m) | Error::InvalidRequest(m) => OAuthError::invalid_request(m),
            Error::InvalidScope(m) => OAuthError::new(S::BAD_REQUEST, "invalid_scope", m),
            Error::TooManyAttempts { retry_after } => OAuthError {
                retry_after: Some(retry_after.to_string()),
                ..OAuthError::new(S::TOO_MANY_REQUESTS, "too_many_attempts", e.to_string())
            },
            Error::Overloaded => OAuthError {
                retry_after: Some("1".into()),
                ..OAuthError::new(
                    S::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    e.to_string(),
                )
            },
            Error::Unavailable(_) => OAuthError {
                retry_after: Some("5".into()),
                ..OAuthError::new(
                    S::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    e.to_string(),
                )
            },
            other => {
                // Logged with its id by the one error table.
                let body = crate::http::ApiError::from(other).body();
                OAuthError::new(S::INTERNAL_SERVER_ERROR, "server_error", body.message)
            }
        }
    }
}

/// The body of `POST /oauth/token`, `/oauth/introspect` and `/oauth/revoke`: a form, read
/// and decoded by [`crate::http::form`]. A bad body, or a parameter given twice (RFC 6749
/// 3.1), is `invalid_request`; parameters it does not know are ignored.
#[derive(Default)]
pub struct OAuthForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    username: Option<String>,
    password: Option<secrecy::SecretString>,
    scope: Option<String>,
    token: Option<String>,
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

impl OAuthForm {
    fn parse(body: &[u8]) -> Result<OAuthForm, OAuthError> {
        let mut form = OAuthForm::default();
        for (name, value) in form::pairs(body) {
            let slot = match name.as_ref() {
                "grant_type" => &mut form.grant_type,
                "refresh_token" => &mut form.refresh_token,
                "username" => &mut form.username,
                "scope" => &mut form.scope,
                "token" => &mut form.token,
                "token_type_hint" => &mut form.token_type_hint,
                "client_id" => &mut form.client_id,
                "client_secret" => &mut form.client_secret,
                "password" => {
                    if form.password.is_some() {
                        return Err(given_twice("password"));
                    }
                    form.password = Some(value.into_owned().into());
                    continue;
                }
                _ => continue,
            };
            if slot.is_some() {
                return Err(given_twice(&name));
            }
            *slot = Some(value.into_owned());
        }
        Ok(form)
    }
}

fn given_twice(name: &str) -> OAuthError {
    OAuthError::invalid_request(format!("{name} is given more than once"))
}

impl FromRequest for OAuthForm {
    type Error = OAuthError;
    type Future = LocalBoxFuture<'static, Result<OAuthForm, OAuthError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let body = form::read(&req, &mut payload, MAX_BODY_BYTES)
                .await
                .map_err(|e| OAuthError::invalid_request(e.to_string()))?;
            OAuthForm::parse(&body)
        })
    }
}

/// The client's credentials, from `Authorization: Basic` or the body; `None` when neither
/// is given. Both at once is refused (RFC 6749 2.3).
fn client_credentials(
    req: &HttpRequest,
    form: &OAuthForm,
) -> Result<Option<(String, String)>, OAuthError> {
    let basic = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(basic_credentials(value).map_err(|e| match e {
            BasicError::NotBasic => OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "clients authenticate with HTTP Basic",
            ),
            BasicError::Malformed => {
                OAuthError::invalid_request("the Basic credentials are not valid")
            }
        })?),
    };
    let posted = match (&form.client_id, &form.client_secret) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        (None, None) => None,
        // A public client may name itself without a secret; it is then not authenticated.
        (Some(_), None) => None,
        (None, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "client_secret without client_id",
            ));
        }
    };
    match (basic, posted) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        )),
        (basic, posted) => Ok(basic.or(posted)),
    }
}

/// The authenticated client, if credentials were given (wrong ones are an error).
async fn client(
    state: &State,
    req: &HttpRequest,
    form: &OAuthForm,
) -> Result<Option<Client>, OAuthError> {
    match client_credentials(req, form)? {
        Some((id, secret)) => Ok(Some(
            state.services.clients.authenticate(&id, &secret).await?,
        )),
        None => Ok(None),
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(OAuthError::invalid_request(format!("{name} is required"))),
    }
}

#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: String,
}

#[derive(Serialize)]
struct ClientTokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: String,
}

impl From<IssuedTokens> for TokenAnswer {
    fn from(t: IssuedTokens) -> Self {
        TokenAnswer {
            access_token: t.access_token,
            token_type: "Bearer",
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
        }
    }
}

/// `POST /oauth/token`.
pub async fn token(
    state: State,
    req: HttpRequest,
    info: ClientInfo,
    form: OAuthForm,
) -> Result<HttpResponse, OAuthError> {
    let client = client(&state, &req, &form).await?;
    if form.grant_type.as_deref() == Some("client_credentials") {
        // RFC 6749 4.4 and RFC 9068: the client's own token, no refresh token.
        let Some(client) = client else {
            return Err(Error::InvalidClient.into());
        };
        let issued = state
            .services
            .clients
            .issue_token(&client, form.scope.as_deref())?;
        return Ok(HttpResponse::Ok()
            .insert_header((header::PRAGMA, "no-cache"))
            .json(ClientTokenAnswer {
                access_token: issued.access_token,
                token_type: "Bearer",
                expires_in: issued.expires_in,
                scope: issued.scope,
            }));
    }
    if form.scope.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scopes are not issued to users; their roles are in the token",
        ));
    }
    let sessions = &state.services.sessions;
    let tokens = match form.grant_type.as_deref() {
        Some("refresh_token") => {
            let refresh_token = required(&form.refresh_token, "refresh_token")?;
            sessions.refresh(refresh_token, None, info).await?
        }
        Some("password") => {
            // RFC 9700 advises against this grant: only for clients registered for it.
            let Some(client) = client else {
                return Err(Error::InvalidClient.into());
            };
            if !client.can_password {
                return Err(Error::UnauthorizedClient.into());
            }
            let username = required(&form.username, "username")?;
            let password = form
                .password
                .clone()
                .ok_or_else(|| OAuthError::invalid_request("password is required"))?;
            sessions.login(username, password, info).await?
        }
        Some(other) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {other:?} is not supported (refresh_token, password, client_credentials)"
                ),
            ));
        }
        None => return Err(OAuthError::invalid_request("grant_type is required")),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::PRAGMA, "no-cache"))
        .json(TokenAnswer::from(tokens)))
}

/// `POST /oauth/introspect` (internal listener; clients allowed to introspect only).
pub async fn introspect(
    state: State,
    req: HttpRequest,
    form: OAuthForm,
) -> Result<HttpResponse, OAuthError> {
    let Some(client) = client(&state, &req, &form).await? else {
        return Err(Error::InvalidClient.into());
    };
    if !client.can_introspect {
        return Err(OAuthError::new(
            StatusCode::FORBIDDEN,
            "unauthorized_client",
            "this client may not introspect tokens",
        ));
    }
    let token = required(&form.token, "token")?;
    let found = state
        .services
        .introspect(token, form.token_type_hint.as_deref())
        .await?;
    let answer = match found {
        // Made once per verified token, like /verify's answer.
        Introspection::Access(v) => v
            .introspection
            .get_or_init(|| {
                let c = &v.claims;
                serde_json::to_vec(&serde_json::json!({
                    "active": true,
                    "token_type": "access_token",
                    "sub": c.sub,
                    "username": c.username,
                    "roles": c.roles,
                    "exp": c.exp,
                    "iat": c.iat,
                    "nbf": c.nbf,
                    "iss": c.iss,
                    "aud": c.aud,
                    "jti": c.jti,
                    "sid": c.sid,
                }))
                .unwrap_or_default()
                .into()
            })
            .clone(),
        Introspection::Refresh(c) => serde_json::to_vec(&serde_json::json!({
            "active": true,
            "token_type": "refresh_token",
            "sub": c.sub,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "iss": c.iss,
            "aud": c.aud,
            "jti": c.jti,
            "sid": c.sid,
        }))
        .unwrap_or_default()
        .into(),
        Introspection::Client(c) => serde_json::to_vec(&serde_json::json!({
            "active": true,
            "token_type": "access_token",
            "client_id": c.client_id,
            "sub": c.sub,
            "scope": c.scope,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "iss": c.iss,
            "aud": c.aud,
            "jti": c.jti,
        }))
        .unwrap_or_default()
        .into(),
        Introspection::Inactive => actix_web::web::Bytes::from_static(br#"{"active":false}"#),
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(answer))
}

/// `POST /oauth/revoke`: 200 whatever the token was (RFC 7009 2.2), except a machine
/// client's token revoked by anyone but that client (401 without credentials, 400
/// `unauthorized_client` for another client: RFC 7009 2.1).
pub async fn revoke(
    state: State,
    req: HttpRequest,
    info: ClientInfo,
    form: OAuthForm,
) -> Result<HttpResponse, OAuthError> {
    // Credentials, when given, must be right; a public client gives none.
    let caller = client(&state, &req, &form).await?;
    let token = required(&form.token, "token")?;
    state
        .services
        .revoke_token(token, caller.as_ref(), info)
        .await
        .map_err(|e| match e {
            Error::UnauthorizedClient => OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "this token was issued to another client",
            ),
            e => e.into(),
        })?;
    Ok(HttpResponse::Ok().finish())
}
