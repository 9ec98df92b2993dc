//! Makes tokens for load tests, with the keys and database of a service's configuration
//! (the same `AUTH__…` settings): `access N` prints N distinct valid access tokens;
//! `refresh N` creates a user with N sessions and prints each session's refresh token, so
//! every one of them can be rotated exactly once. Used by `bench/hot_path.sh`.
//!
//! Run: `cargo run --release -p auth-service --example mint_tokens -- access 20000`.

use std::io::Write;

use auth_service::config::{Settings, Sources};
use auth_service::domain::{Clock, SystemClock, maintenance};
use auth_service::model::{ClientInfo, SessionId, TokenId, UserId};
use auth_service::security::keys::Keys;
use auth_service::security::passwords::Passwords;
use auth_service::security::tokens::{AccessGrant, RefreshGrant, Tokens};
use auth_service::storage::refresh_tokens::{self, RefreshTokenRecord};
use auth_service::storage::sessions::{self, NewSession};
use auth_service::storage::{open_connection, run_migrations};
use secrecy::SecretString;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (kind, n) = match args.as_slice() {
        [_, kind, n] => (kind.as_str(), n.parse::<usize>()?),
        _ => return Err("usage: mint_tokens access|refresh N".into()),
    };
    let settings = Settings::load(&Sources::process(None))?;
    let tokens = Tokens::new(Keys::load(&settings)?, &settings.tokens);
    let now = SystemClock.now();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match kind {
        "access" => {
            for _ in 0..n {
                let token = tokens.issue_access(
                    AccessGrant {
                        user_id: UserId::random(),
                        username: "bench",
                        roles: vec!["user".into()],
                        session_id: SessionId::random(),
                    },
                    now,
                )?;
                writeln!(out, "{token}")?;
            }
        }
        "refresh" => {
            let mut conn = open_connection(&settings)?;
            run_migrations(&mut conn)?;
            let passwords = Passwords::new(&settings.password)?;
            let name = format!("bench{}", uuid::Uuid::new_v4().simple());
            let password = SecretString::from("correct horse battery".to_string());
            let account = maintenance::NewAccount {
                username: &name,
                email: None,
                password: &password,
                extra_roles: &[],
            };
            let user = maintenance::create_user(
                &mut conn,
                &passwords,
                &account,
                now,
                auth_service::domain::audit::Outbox::for_settings(&settings),
            )?;
            let client = ClientInfo::default();
            let ttl = settings.tokens.refresh_ttl.as_secs_i64();
            for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
                let minted = conn.write_transaction(|conn| {
                    let mut minted = Vec::new();
                    for _ in chunk {
                        let session = NewSession {
                            id: SessionId::random(),
                            user_id: user.id,
                            now,
                            expires_at: None,
                            client: &client,
                        };
                        let token = RefreshTokenRecord {
                            jti: TokenId::random(),
                            session_id: session.id,
                            parent_jti: None,
                            issued_at: now,
                            expires_at: now + ttl,
                            used_at: None,
                        };
                        sessions::insert(conn, &session)?;
                        refresh_tokens::insert(conn, &token)?;
                        minted.push(token);
                    }
                    Ok::<_, auth_service::storage::StorageError>(minted)
                })?;
                for t in minted {
                    let signed = tokens.sign_refresh(&RefreshGrant {
                        jti: t.jti,
                        session_id: t.session_id,
                        user_id: user.id,
                        issued_at: t.issued_at,
                        expires_at: t.expires_at,
                    })?;
                    writeln!(out, "{signed}")?;
                }
            }
        }
        other => return Err(format!("unknown kind {other:?}: access or refresh").into()),
    }
    Ok(())
}
