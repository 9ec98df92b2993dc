//! The one portable diesel schema, shared by the SQLite and PostgreSQL migrations
//! (`migrations/sqlite`, `migrations/postgres`).

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        username_key -> Text,
        email -> Nullable<Text>,
        password_hash -> Text,
        disabled -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> BigInt,
        last_used_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        revoked_reason -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        ip -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (jti) {
        jti -> Text,
        session_id -> Text,
        parent_jti -> Nullable<Text>,
        issued_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    user_roles (user_id, role) {
        user_id -> Text,
        role -> Text,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(user_roles -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> BigInt,
        kind -> Text,
        user_id -> Nullable<Text>,
        session_id -> Nullable<Text>,
        ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        detail -> Text,
        event_id -> Nullable<Text>,
    }
}

diesel::table! {
    event_outbox (seq) {
        seq -> BigInt,
        event_id -> Text,
        subject -> Text,
        payload -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    event_relay_lease (id) {
        id -> Integer,
        holder -> Nullable<Text>,
        expires_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    clients,
    users,
    user_roles,
    sessions,
    refresh_tokens,
    audit_events
);

diesel::table! {
    service_health (id) {
        id -> Integer,
        checked_at -> BigInt,
        ballast -> Nullable<Binary>,
    }
}

diesel::table! {
    clients (client_id) {
        client_id -> Text,
        secret_hash -> Text,
        can_introspect -> Bool,
        can_client_credentials -> Bool,
        can_password -> Bool,
        scopes -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        can_user_events -> Bool,
    }
}

diesel::table! {
    user_events (seq) {
        seq -> BigInt,
        event_id -> Text,
        user_id -> Text,
        kind -> Text,
        received_at -> BigInt,
    }
}

diesel::table! {
    revoked_client_tokens (jti) {
        jti -> Text,
        client_id -> Text,
        revoked_at -> BigInt,
        expires_at -> BigInt,
    }
}
