//! The operations: registration, credential checks, password changes, and the operators'
//! changes to users. Each is one function on [`Users`]; HTTP and the command line call them.

pub mod users;
pub mod validation;

pub use users::{Page, Registration, Users};
