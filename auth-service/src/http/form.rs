//! `application/x-www-form-urlencoded` bodies (the OAuth endpoints): read with a size limit
//! and split into decoded name/value pairs.
//!
//! Introspection reads a form on every call, so decoding is cheap where it can be: a
//! component with no `%` and no `+` (every JWT, every generated client secret) is checked
//! as UTF-8 and used as it is; only the others are percent-decoded.

use std::borrow::Cow;

use actix_web::HttpRequest;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use futures_util::StreamExt;

/// Why a form body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum FormError {
    /// Not `application/x-www-form-urlencoded`, or a charset other than UTF-8.
    ContentType,
    /// Over the limit, by its `Content-Length` or as it arrived.
    TooLarge,
    /// The connection failed or the body was malformed on the wire.
    Unreadable(String),
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormError::ContentType => {
                f.write_str("the body must be application/x-www-form-urlencoded (UTF-8)")
            }
            FormError::TooLarge => f.write_str("the body is too large"),
            FormError::Unreadable(e) => write!(f, "the body could not be read: {e}"),
        }
    }
}

/// Whether the request says it carries a form, in UTF-8 (RFC 6749 Appendix B). A
/// `charset` parameter other than UTF-8 is refused rather than guessed at.
pub fn is_form(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = charset.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// The body of a form request, at most `limit` bytes. A body that arrives in one piece
/// (the usual case) is not copied.
pub async fn read(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<Bytes, FormError> {
    if !is_form(req) {
        return Err(FormError::ContentType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(FormError::TooLarge);
    }
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    let mut size = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| FormError::Unreadable(e.to_string()))?;
        size += chunk.len();
        if size > limit {
            return Err(FormError::TooLarge);
        }
        match (&mut first, &mut more) {
            (None, _) => first = Some(chunk),
            (Some(f), None) => {
                let mut joined = BytesMut::with_capacity(declared.unwrap_or(size).min(limit));
                joined.extend_from_slice(f);
                joined.extend_from_slice(&chunk);
                more = Some(joined);
            }
            (Some(_), Some(joined)) => joined.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, more) {
        (_, Some(joined)) => joined.freeze(),
        (Some(one), None) => one,
        (None, None) => Bytes::new(),
    })
}

/// The name/value pairs of a form body, in order. Empty pieces between `&` are skipped; a
/// piece without `=` has an empty value. Invalid UTF-8 (after decoding) becomes U+FFFD,
/// as WHATWG's URL standard decodes forms.
pub fn pairs(body: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let mut rest = body;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            // memchr rather than a byte-by-byte split: a token is most of the body.
            let (piece, next) = match memchr::memchr(b'&', rest) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            if piece.is_empty() {
                continue;
            }
            let (name, value) = match memchr::memchr(b'=', piece) {
                Some(i) => (&piece[..i], &piece[i + 1..]),
                None => (piece, &piece[piece.len()..]),
            };
            return Some((decode(name), decode(value)));
        }
    })
}

/// One form component decoded: `+` is a space and `%XX` a byte. Borrowed when there is
/// nothing to decode and the bytes are UTF-8.
pub fn decode(raw: &[u8]) -> Cow<'_, str> {
    if memchr::memchr2(b'%', b'+', raw).is_none() {
        // `from_utf8` checks a word at a time; the lossy path only for what fails it.
        return match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(raw),
        };
    }
    match unescape(raw) {
        Ok(s) => Cow::Owned(s),
        Err(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// The same, for credentials: `None` when the result is not UTF-8, rather than a guess.
pub fn decode_strict(raw: &str) -> Option<Cow<'_, str>> {
    if memchr::memchr2(b'%', b'+', raw.as_bytes()).is_none() {
        return Some(Cow::Borrowed(raw));
    }
    unescape(raw.as_bytes()).ok().map(Cow::Owned)
}

/// `+` as a space and `%XX` as a byte; the bytes back when they are not UTF-8.
fn unescape(raw: &[u8]) -> Result<String, Vec<u8>> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(bytes).map_err(|e| e.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn all(body: &str) -> Vec<(String, String)> {
        pairs(body.as_bytes())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn plain_components_are_borrowed() {
        let token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-_";
        assert!(matches!(decode(token.as_bytes()), Cow::Borrowed(t) if t == token));
        let body = format!("token={token}&token_type_hint=access_token");
        let found: Vec<_> = pairs(body.as_bytes()).collect();
        assert!(matches!(&found[0].1, Cow::Borrowed(t) if *t == token));
    }

    #[test]
    fn escapes_and_plus_are_decoded_like_form_urlencoded() {
        let cases = [
            "a=b&c=d",
            "name=J%C3%BCrgen+M%C3%BCller&x=%2B%26%3D",
            "&&a=1&&b&=c&d=",
            "bad=%ZZ%4&tail=%",
            "utf=%FF%FE&raw=\u{e9}t\u{e9}",
            "a=1&a=2",
            "",
        ];
        for body in cases {
            let ours = all(body);
            let reference: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
                .map(|(n, v)| (n.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, reference, "{body:?}");
        }
        assert_eq!(decode(b"%E2%9C%93+ok"), "\u{2713} ok");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(decode(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(decode(b"a%FFb"), "a\u{fffd}b");
        assert_eq!(decode_strict("a%FFb"), None);
        assert_eq!(decode_strict("a+b%2B").as_deref(), Some("a b+"));
        assert!(matches!(
            decode_strict("plain"),
            Some(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn only_utf8_forms_are_forms() {
        let with = |ct: &str| {
            TestRequest::default()
                .insert_header(("content-type", ct))
                .to_http_request()
        };
        assert!(is_form(&with("application/x-www-form-urlencoded")));
        assert!(is_form(&with(
            "Application/X-WWW-Form-URLEncoded ; charset=UTF-8"
        )));
        assert!(is_form(&with(
            "application/x-www-form-urlencoded; charset=\"utf-8\""
        )));
        assert!(!is_form(&with(
            "application/x-www-form-urlencoded; charset=iso-8859-1"
        )));
        assert!(!is_form(&with("application/json")));
        assert!(!is_form(&with("multipart/form-data; boundary=x")));
        assert!(!is_form(&TestRequest::default().to_http_request()));
    }

    #[actix_web::test]
    async fn bodies_are_read_whole_and_bounded() {
        let form = |body: &'static str| {
            TestRequest::default()
                .insert_header(("content-type", "application/x-www-form-urlencoded"))
                .set_payload(body)
                .to_http_parts()
        };
        let (req, mut payload) = form("token=abc");
        assert_eq!(read(&req, &mut payload, 64).await.unwrap(), "token=abc");
        let (req, mut payload) = form("token=abcdefgh");
        assert_eq!(read(&req, &mut payload, 8).await, Err(FormError::TooLarge));
        let (req, mut payload) = TestRequest::default()
            .insert_header(("content-type", "application/json"))
            .set_payload("{}")
            .to_http_parts();
        assert_eq!(
            read(&req, &mut payload, 64).await,
            Err(FormError::ContentType)
        );
    }
}
