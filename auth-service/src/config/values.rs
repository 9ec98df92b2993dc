//! Typed setting values: how each is read from TOML or the environment (with an error that
//! says what is allowed), and how `check-config` prints it back (secrets redacted).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

// ---- durations ---------------------------------------------------------------------------

/// A duration written with a unit (`100ms`, `3s`, `5m`, `1h`, `90d`). A bare number is refused:
/// `300` could mean seconds or milliseconds. Printed in the largest unit that divides it
/// exactly, so `90d` prints as `90d`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(Duration);

impl Span {
    pub const fn secs(s: u64) -> Span {
        Span(Duration::from_secs(s))
    }

    pub const fn millis(ms: u64) -> Span {
        Span(Duration::from_millis(ms))
    }

    pub const fn get(self) -> Duration {
        self.0
    }

    /// Whole seconds, saturating (for Unix-time arithmetic).
    pub fn as_secs_i64(self) -> i64 {
        i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX)
    }
}

impl From<Span> for Duration {
    fn from(s: Span) -> Duration {
        s.0
    }
}

const DURATION_EXPECTED: &str =
    "a duration with a unit, such as \"500ms\", \"30s\", \"5m\", \"1h\" or \"90d\"";

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Span, String> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("expected {DURATION_EXPECTED}; {s:?} has no unit"));
        }
        humantime::parse_duration(s)
            .map(Span)
            .map_err(|_| format!("expected {DURATION_EXPECTED}, found {s:?}"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
        ] {
            if ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Span, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "expected {DURATION_EXPECTED}; the number {n} has no unit (write it in quotes with a unit)"
                )))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "expected {DURATION_EXPECTED}; the number {n} has no unit (write it in quotes with a unit)"
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Span, E> {
                Err(E::custom(format!(
                    "expected {DURATION_EXPECTED}; the number {n} has no unit"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---- whole numbers -----------------------------------------------------------------------

/// Reads a whole number in `T`'s range from a TOML integer or an environment string, with an
/// error that states the range (`-1` in a count says what is allowed, not "expected u32").
pub fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<T: TryFrom<u64> + Bounded> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number from 0 to {}", T::MAX_U64)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            T::try_from(n).map_err(|_| E::custom(out_of_range::<T>(&n.to_string())))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(out_of_range::<T>(&n.to_string()))),
            }
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
            Err(E::custom(out_of_range::<T>(&n.to_string())))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            match s.trim().parse::<u64>() {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(out_of_range::<T>(&format!("{s:?}")))),
            }
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// [`whole`] for an optional setting.
pub fn whole_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + Bounded,
{
    struct W<T>(T);
    impl<'de, T: TryFrom<u64> + Bounded> Deserialize<'de> for W<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<W<T>, D::Error> {
            whole(d).map(W)
        }
    }
    Ok(Option::<W<T>>::deserialize(d)?.map(|w| w.0))
}

fn out_of_range<T: Bounded>(found: &str) -> String {
    format!(
        "expected a whole number from 0 to {}, found {found}",
        T::MAX_U64
    )
}

/// The largest value of an unsigned setting type.
pub trait Bounded {
    const MAX_U64: u64;
}

impl Bounded for u32 {
    const MAX_U64: u64 = u32::MAX as u64;
}

impl Bounded for usize {
    const MAX_U64: u64 = usize::MAX as u64;
}

impl Bounded for u64 {
    const MAX_U64: u64 = u64::MAX;
}

// ---- addresses ---------------------------------------------------------------------------

/// A listen address such as `127.0.0.1:8080` or `[::]:8081`.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        de::Error::custom(format!(
            "expected an address with a port, such as \"127.0.0.1:8080\", found {text:?}"
        ))
    })
}

/// Addresses or CIDR ranges (`10.0.0.0/8, 192.168.1.7`), from a comma-separated string (the
/// environment) or a TOML list. A plain address is a one-address range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList(pub Vec<ipnet::IpNet>);

impl NetList {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn parse_one(s: &str) -> Result<ipnet::IpNet, String> {
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(|net| net.trunc())
            .map_err(|_| {
                format!(
                    "expected IP addresses or CIDR ranges such as \"10.0.0.0/8\"; {s:?} is neither"
                )
            })
    }
}

/// A list setting's items: comma-separated, blanks ignored, each parsed by `one`.
fn parse_list<T>(s: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(one)
        .collect()
}

/// A list setting as text: comma-separated in the environment, or a TOML list (joined).
fn list_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        List(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Text(t) => t,
        Raw::List(items) => items.join(","),
    })
}

impl FromStr for NetList {
    type Err = String;
    fn from_str(s: &str) -> Result<NetList, String> {
        parse_list(s, NetList::parse_one).map(NetList)
    }
}

impl<'de> Deserialize<'de> for NetList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NetList, D::Error> {
        list_text(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for NetList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = self.0.iter().map(|n| n.to_string()).collect();
        s.serialize_str(&text.join(", "))
    }
}

/// `cors.allowed_origins`: web origins, each `http://` or `https://`, a host and an optional
/// port, nothing else (no path, no `*`, no `null`). Kept lower-cased, as browsers send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginList(pub Vec<String>);

impl OriginList {
    pub fn contains(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn parse_one(s: &str) -> Result<String, String> {
        let bad = || {
            format!(
                "expected origins such as \"https://app.example.com\" or \"http://localhost:3000\" \
                 (scheme, host, optional port; no path, no *); {s:?} is not one"
            )
        };
        let origin = s.trim_end_matches('/').to_ascii_lowercase();
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(bad)?;
        // `[::1]:8080` and `[::1]` keep their brackets; a port is digits after the last `:`
        // that closes no IPv6 literal.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') && (!h.starts_with('[') || h.ends_with(']')) => {
                (h, Some(p))
            }
            _ => (rest, None),
        };
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if host_ok && port_ok {
            Ok(origin)
        } else {
            Err(bad())
        }
    }
}

impl FromStr for OriginList {
    type Err = String;
    fn from_str(s: &str) -> Result<OriginList, String> {
        parse_list(s, OriginList::parse_one).map(OriginList)
    }
}

impl<'de> Deserialize<'de> for OriginList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OriginList, D::Error> {
        list_text(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for OriginList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.join(", "))
    }
}

// ---- the database URL --------------------------------------------------------------------

/// `database.url`. The backend is chosen by the scheme; any other scheme is refused rather
/// than taken for a file name.
#[derive(Clone)]
pub enum DatabaseUrl {
    /// A SQLite file.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database (one connection; for experiments).
    SqliteMemory,
    /// The whole URL, which may carry a password.
    Postgres(SecretString),
}

const URL_EXPECTED: &str =
    "expected sqlite://PATH, sqlite::memory: or postgres://user:password@host/db";

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        if raw == "sqlite::memory:" || raw == "sqlite://:memory:" {
            return Ok(DatabaseUrl::SqliteMemory);
        }
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(format!("{URL_EXPECTED}; sqlite:// needs a file path"));
            }
            return Ok(DatabaseUrl::SqliteFile(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(SecretString::from(raw.to_string())));
        }
        let scheme = raw.split_once("://").map_or("none", |(s, _)| s);
        Err(format!(
            "{URL_EXPECTED}; the scheme {scheme:?} is not supported"
        ))
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::SqliteFile(_) | DatabaseUrl::SqliteMemory => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }

    /// The URL with every password replaced by `***`: in the user-info part
    /// (`postgres://u:secret@h`) and in query parameters (`?password=secret`).
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::SqliteFile(p) => format!("sqlite://{}", p.display()),
            DatabaseUrl::SqliteMemory => "sqlite::memory:".into(),
            DatabaseUrl::Postgres(url) => redact_url(url.expose_secret()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DatabaseUrl, D::Error> {
        // Deserialised straight into a secret type, so a parse error never echoes the URL.
        let raw = SecretString::deserialize(d)?;
        DatabaseUrl::parse(raw.expose_secret()).map_err(de::Error::custom)
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Replaces passwords in a URL with `***`: the user-info password and the value of any query
/// parameter whose name contains "pass", "secret" or "key" (libpq reads `?password=`).
/// Everything up to the last `@` is user info (libpq accepts an unencoded `?`, `/` or `#` in
/// a password), so a password can never be taken for the host or the query.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    let (userinfo, location) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = format!("{scheme}://");
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:***@")),
            None => out.push_str(&format!("{userinfo}@")),
        }
    }
    match location.split_once('?') {
        Some((base, query)) => {
            out.push_str(base);
            let params: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push('?');
            out.push_str(&params.join("&"));
        }
        None => out.push_str(location),
    }
    out
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("pass") || name.contains("secret") || name.contains("key")
}

// ---- algorithms --------------------------------------------------------------------------

/// The access-token signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    EdDSA,
    ES256,
    HS256,
}

impl SigningAlgorithm {
    pub const ALL: [SigningAlgorithm; 3] = [
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::ES256,
        SigningAlgorithm::HS256,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::HS256 => "HS256",
        }
    }
}

impl FromStr for SigningAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<SigningAlgorithm, String> {
        SigningAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("expected one of EdDSA, ES256, HS256, found {s:?}"))
    }
}

impl<'de> Deserialize<'de> for SigningAlgorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SigningAlgorithm, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl Serialize for SigningAlgorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// ---- where users live --------------------------------------------------------------------

/// `users.source`: this service's own tables, or a user service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSource {
    #[default]
    Local,
    Remote,
}

impl UserSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UserSource::Local => "local",
            UserSource::Remote => "remote",
        }
    }
}

impl<'de> Deserialize<'de> for UserSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UserSource, D::Error> {
        match String::deserialize(d)?.as_str() {
            "local" => Ok(UserSource::Local),
            "remote" => Ok(UserSource::Remote),
            other => Err(de::Error::custom(format!(
                "expected \"local\" or \"remote\", found {other:?}"
            ))),
        }
    }
}

impl Serialize for UserSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// ---- the message broker ------------------------------------------------------------------

/// `events.url`: one or more NATS server URLs, comma-separated. It may carry credentials
/// (`nats://user:password@host`, `nats://token@host`), so it is kept secret and prints with
/// them replaced by `***`.
#[derive(Clone)]
pub struct BrokerUrl(SecretString);

impl BrokerUrl {
    pub fn parse(raw: &str) -> Result<BrokerUrl, String> {
        let servers: Vec<&str> = raw.split(',').map(str::trim).collect();
        for server in &servers {
            let scheme = server.split_once("://").map(|(scheme, _)| scheme);
            let host = server.split_once("://").map_or("", |(_, rest)| rest);
            if !matches!(scheme, Some("nats" | "tls" | "ws" | "wss")) || host.is_empty() {
                return Err(
                    "expected nats://, tls://, ws:// or wss:// URLs (comma-separated)".into(),
                );
            }
        }
        Ok(BrokerUrl(SecretString::from(servers.join(","))))
    }

    /// The URL(s) with credentials, for connecting only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL(s) without credentials: a user's password, or a token, as `***`.
    pub fn redacted(&self) -> String {
        self.expose()
            .split(',')
            .map(|server| match server.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((userinfo, host)) => match userinfo.split_once(':') {
                        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                        None => format!("{scheme}://***@{host}"),
                    },
                    None => server.to_string(),
                },
                None => server.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BrokerUrl, D::Error> {
        // Straight into a secret type, so a parse error never echoes the URL.
        let raw = SecretString::deserialize(d)?;
        BrokerUrl::parse(raw.expose_secret()).map_err(de::Error::custom)
    }
}

impl Serialize for BrokerUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

// ---- secrets -----------------------------------------------------------------------------

/// What a secret setting prints as.
pub const REDACTED: &str = "<redacted>";

/// Prints a secret setting as `<redacted>` (or as unset).
pub fn redacted<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_print_as_written() {
        for text in ["90d", "5m", "2s", "100ms", "1h", "0s"] {
            assert_eq!(text.parse::<Span>().unwrap().to_string(), text);
        }
        assert_eq!("2h 30m".parse::<Span>().unwrap().to_string(), "150m");
        let e = "300".parse::<Span>().unwrap_err();
        assert!(e.contains("no unit"), "{e}");
        assert!("soon".parse::<Span>().is_err());
    }

    #[test]
    fn urls_are_redacted_everywhere() {
        assert_eq!(
            redact_url("postgres://a:b@h:5432/d"),
            "postgres://a:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://a@h/d"), "postgres://a@h/d");
        assert_eq!(
            redact_url("postgres://u@h/db?password=hunter2&sslmode=require"),
            "postgres://u@h/db?password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://u:x@h/db?sslpassword=k"),
            "postgresql://u:***@h/db?sslpassword=***"
        );
        // Characters that end a host or start a query, inside the password.
        for url in [
            "postgres://u:pa?ss@h/db",
            "postgres://u:pa/ss@h/db",
            "postgres://u:pa#ss@h/db",
            "postgres://u:p@ss@h/db",
        ] {
            let shown = redact_url(url);
            assert_eq!(shown, "postgres://u:***@h/db", "{url}");
        }
    }

    #[test]
    fn url_schemes() {
        assert!(
            matches!(DatabaseUrl::parse("sqlite://./data/a.db"), Ok(DatabaseUrl::SqliteFile(p)) if p == std::path::Path::new("./data/a.db"))
        );
        assert!(
            matches!(DatabaseUrl::parse("sqlite:///var/lib/a.db"), Ok(DatabaseUrl::SqliteFile(p)) if p == std::path::Path::new("/var/lib/a.db"))
        );
        assert!(matches!(
            DatabaseUrl::parse("sqlite::memory:"),
            Ok(DatabaseUrl::SqliteMemory)
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgres://u@h/d"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://u@h/d"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        for bad in ["./data/a.db", "mysql://h/d", "sqlite://", "", "SQLITE://x"] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origin_lists() {
        let l: OriginList = "https://App.example.com/, http://localhost:3000,http://[::1]:8080"
            .parse()
            .unwrap();
        assert_eq!(
            l.0,
            [
                "https://app.example.com",
                "http://localhost:3000",
                "http://[::1]:8080"
            ]
        );
        assert!(l.contains("http://LOCALHOST:3000"));
        assert!(!l.contains("http://localhost:3001"));
        for bad in [
            "*",
            "null",
            "localhost:3000",
            "https://app.example.com/path",
            "http://host:0",
            "http://host:99999",
            "ftp://host",
            "http://",
            "http://a b",
        ] {
            assert!(bad.parse::<OriginList>().is_err(), "{bad} accepted");
        }
        assert!("".parse::<OriginList>().unwrap().is_empty());
    }

    #[test]
    fn net_lists() {
        let l: NetList = "10.0.0.0/8, 192.168.1.7 ,fd00::/8".parse().unwrap();
        let shown: Vec<String> = l.0.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
        assert!(l.contains(&"10.1.2.3".parse().unwrap()));
        assert!("10.0.0.0/8,proxy".parse::<NetList>().is_err());
        assert_eq!("".parse::<NetList>().unwrap(), NetList::default());
    }
}
