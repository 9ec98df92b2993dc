//! A database per test.

use diesel::{Connection, PgConnection, RunQueryDsl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `TEST_POSTGRES_URL`, or the machine's local server.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Replaces the database name in a PostgreSQL URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A database that exists for one test: a SQLite file in the given directory, or a fresh
/// PostgreSQL database, dropped when this value is. PostgreSQL being unreachable fails the
/// test; it never skips.
pub struct TestDb {
    pub url: String,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub fn new(backend: Backend, dir: &std::path::Path) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.join("auth.db").display()),
                pg: None,
            },
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for the postgres tests and is not reachable at \
                         TEST_POSTGRES_URL ({admin}): {e}"
                    )
                });
                let name = format!("test_{}", uuid::Uuid::new_v4().simple());
                diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut conn)
                    .expect("create test database");
                TestDb {
                    url: with_database(&admin, &name),
                    pg: Some((admin, name)),
                }
            }
        }
    }

    /// Runs SQL against the server as its administrator (PostgreSQL only).
    pub fn pg_admin(&self, sql: &str) {
        let (admin, _) = self.pg.as_ref().expect("postgres only");
        let mut conn = PgConnection::establish(admin).expect("admin connection");
        diesel::sql_query(sql).execute(&mut conn).expect(sql);
    }

    /// The database's name (PostgreSQL only).
    pub fn pg_name(&self) -> &str {
        &self.pg.as_ref().expect("postgres only").1
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = PgConnection::establish(admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}
