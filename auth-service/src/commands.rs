//! Operator commands that work on the database directly, without a running server:
//! creating users (the first administrator), granting and revoking roles, pruning.
//! They apply the same rules and write the same audit trail as the HTTP API; a running
//! server picks up the sessions they end within `revocation.poll_interval`.

use secrecy::SecretString;

use crate::admin::{RoleChange, apply_roles, validate_roles};
use crate::audit::{self, AuditEvent, AuditKind};
use crate::db::{DbConn, open_connection, run_migrations};
use crate::error::Error;
use crate::password::Passwords;
use crate::service::{
    ClientInfo, DEFAULT_ROLE, UserView, normalize_email, now, prune_request, validate_password,
    validate_username,
};
use crate::settings::Settings;
use crate::store::{self, Pruned, UserRow};

fn connect(settings: &Settings) -> Result<DbConn, Error> {
    let mut conn = open_connection(settings)?;
    run_migrations(&mut conn)?;
    Ok(conn)
}

/// Creates a user with the given roles (`user` is always included).
pub fn create_user(
    settings: &Settings,
    username: &str,
    email: Option<&str>,
    password: SecretString,
    extra_roles: &[String],
) -> Result<UserView, Error> {
    validate_username(username)?;
    validate_password(&password)?;
    let email = email.map(normalize_email).transpose()?;
    let mut roles = vec![DEFAULT_ROLE.to_string()];
    roles.extend(extra_roles.iter().cloned());
    validate_roles(&roles)?;
    let mut conn = connect(settings)?;
    let passwords = Passwords::new(&settings.password)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let hash = runtime.block_on(passwords.hash(password))?;
    let ts = now();
    let user = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        username: username.to_string(),
        username_key: username.to_lowercase(),
        email,
        password_hash: hash,
        roles: store::join_roles(&roles),
        disabled: false,
        created_at: ts,
        updated_at: ts,
    };
    let client = ClientInfo::default();
    conn.write_transaction(|conn| {
        store::insert_user(conn, &user)?;
        let event = AuditEvent::new(AuditKind::Registered, &client)
            .user(&user.id)
            .detail(serde_json::json!({"via": "command_line"}));
        audit::record(conn, &event, ts)?;
        for role in user.role_list().iter().filter(|r| *r != DEFAULT_ROLE) {
            let event = AuditEvent::new(AuditKind::RoleGranted, &client)
                .user(&user.id)
                .detail(serde_json::json!({"role": role, "by": null, "via": "command_line"}));
            audit::record(conn, &event, ts)?;
        }
        Ok::<_, Error>(())
    })?;
    Ok(UserView::from(&user))
}

/// Grants (`grant = true`) or revokes a role of the user with this username or email.
/// Revoking ends the user's sessions; removing the last administrator is refused.
pub fn change_role(
    settings: &Settings,
    login: &str,
    role: &str,
    grant: bool,
) -> Result<RoleChange, Error> {
    validate_roles(&[role.to_string()])?;
    let mut conn = connect(settings)?;
    // Read and write in one serialised transaction, so a concurrent change is not lost.
    conn.write_transaction(|conn| {
        store::lock_admin_changes(conn)?;
        let user = store::find_user_for_login(conn, login)?.ok_or(Error::NotFound)?;
        let mut roles = user.role_list();
        if grant {
            roles.push(role.to_string());
        } else {
            roles.retain(|r| r != role);
        }
        apply_roles(conn, &user.id, &roles, None, &ClientInfo::default(), now())
    })
}

/// One pruning pass with the configured retention.
pub fn prune(settings: &Settings) -> Result<Pruned, Error> {
    let mut conn = connect(settings)?;
    let request = prune_request(settings, now());
    store::prune(&mut conn, &request)
}
