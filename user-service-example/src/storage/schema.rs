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
    user_roles (user_id, role) {
        user_id -> Text,
        role -> Text,
    }
}

diesel::table! {
    notifications (seq) {
        seq -> BigInt,
        id -> Text,
        kind -> Text,
        user_id -> Text,
        role -> Nullable<Text>,
        at -> BigInt,
    }
}

diesel::joinable!(user_roles -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, user_roles, notifications);
