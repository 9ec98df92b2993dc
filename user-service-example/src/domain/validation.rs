//! What a user may choose: usernames and email addresses (passwords: `passwords.rs`).

use crate::error::Error;

pub const MAX_EMAIL_CHARS: usize = 254;

/// 3 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'.
pub fn validate_username(username: &str) -> Result<(), Error> {
    let ok_len = (3..=64).contains(&username.len());
    let ok_chars = username
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(Error::InvalidRequest(
            "username: 3 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into(),
        ))
    }
}

/// A deliberately loose check: one '@' with something on both sides, no spaces or controls.
/// Returns the address trimmed and lower-cased, as it is stored and matched.
pub fn normalize_email(email: &str) -> Result<String, Error> {
    let email = email.trim();
    let bad = || Error::InvalidRequest("email: not a valid address".into());
    if email.is_empty() || email.chars().count() > MAX_EMAIL_CHARS {
        return Err(bad());
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email.to_lowercase())
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["abc", "Alice.B_c-9", &"a".repeat(64)] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(65),
            "al ice",
            "al@ice",
            "ålice",
            "",
            "a/b",
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" A@Example.COM ").unwrap(), "a@example.com");
        for bad in ["", "a", "@b", "a@", "a b@c", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
