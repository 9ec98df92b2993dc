//! Typed identifiers. Each is a UUID underneath, parsed once where it enters the service (a
//! path segment, a token claim, a database row) so that nothing further in can be handed a
//! malformed id, or a session id where a user id is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A string that is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind}")]
pub struct InvalidId {
    pub kind: &'static str,
}

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// What this id is called in error messages.
            pub const KIND: &'static str = $kind;

            /// A fresh random (version 4) id.
            pub fn random() -> $name {
                $name(Uuid::new_v4())
            }

            /// Accepts the usual textual forms of a UUID.
            pub fn parse(s: &str) -> Result<$name, InvalidId> {
                Uuid::parse_str(s)
                    .map($name)
                    .map_err(|_| InvalidId { kind: $kind })
            }

            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            /// The canonical hyphenated form, which is also how the id is stored.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<$name, InvalidId> {
                $name::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<$name, InvalidId> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(
    /// A user account.
    UserId,
    "user id"
);
uuid_id!(
    /// A session: one log-in and the family of refresh tokens rotated from it (`sid`).
    SessionId,
    "session id"
);
uuid_id!(
    /// One token (`jti`): a refresh token row, or an access token.
    TokenId,
    "token id"
);
uuid_id!(
    /// One audit event, as recorded and as published to the broker (`Nats-Msg-Id`).
    EventId,
    "event id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        let id = UserId::random();
        assert_eq!(UserId::parse(&id.to_string()), Ok(id));
        let upper = id.to_string().to_uppercase();
        assert_eq!(
            UserId::parse(&upper).map(|i| i.to_string()),
            Ok(id.to_string())
        );
        for bad in ["", "42", "not-a-uuid", "5b0e"] {
            assert_eq!(SessionId::parse(bad), Err(InvalidId { kind: "session id" }));
        }
    }

    #[test]
    fn serde_is_the_plain_string() {
        let id = TokenId::random();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<TokenId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TokenId>("\"x\"").is_err());
    }
}
