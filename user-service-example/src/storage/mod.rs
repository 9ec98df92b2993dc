//! Storage: the connection and pool, the schema, and one module per table.

pub mod connection;
pub mod notifications;
pub mod schema;
pub mod users;

pub use connection::{DbConn, Store, db_error, open_connection, run_migrations};
