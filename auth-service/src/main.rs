//! The `auth-service` binary: everything it does starts in [`auth_service::cli`].

fn main() -> std::process::ExitCode {
    auth_service::cli::main()
}
