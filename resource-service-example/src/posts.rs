//! Posts: a tiny timeline kept in memory (it is gone when the process stops). Every post has
//! an owner, the verified user who wrote it; only the owner or an administrator deletes it.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;
use crate::verify::{Identity, UserId};

/// Longest post text, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Posts one user may keep at once: the store lives in memory, so it is bounded per user.
pub const MAX_POSTS_PER_USER: usize = 1000;
/// The role that may delete anyone's post.
pub const ADMIN_ROLE: &str = "admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct PostId(Uuid);

impl PostId {
    /// Parses a post id from a path segment; anything that is not one names no post.
    pub fn parse(raw: &str) -> Result<PostId, Error> {
        Uuid::parse_str(raw)
            .map(PostId)
            .map_err(|_| Error::NotFound)
    }
}

impl std::fmt::Display for PostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Post {
    pub id: PostId,
    pub owner_id: UserId,
    pub owner_username: String,
    pub text: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Default)]
pub struct PostStore {
    inner: Mutex<Posts>,
}

#[derive(Default)]
struct Posts {
    by_id: HashMap<PostId, Post>,
    /// Each owner's post ids, oldest first.
    by_owner: HashMap<UserId, Vec<PostId>>,
}

impl PostStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Posts> {
        // A panic while holding the lock cannot leave the maps half-updated (every update is
        // a pair of infallible inserts/removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn create(&self, author: &Identity, text: &str) -> Result<Post, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::Validation("text must not be empty".into()));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(Error::Validation(format!(
                "text must be at most {MAX_TEXT_CHARS} characters"
            )));
        }
        let post = Post {
            id: PostId(Uuid::new_v4()),
            owner_id: author.user_id.clone(),
            owner_username: author.username.clone(),
            text: text.to_string(),
            created_at: OffsetDateTime::now_utc(),
        };
        let mut posts = self.lock();
        let mine = posts.by_owner.entry(author.user_id.clone()).or_default();
        if mine.len() >= MAX_POSTS_PER_USER {
            return Err(Error::PostLimit);
        }
        mine.push(post.id);
        posts.by_id.insert(post.id, post.clone());
        Ok(post)
    }

    /// The caller's own posts, newest first.
    pub fn list_own(&self, caller: &Identity) -> Vec<Post> {
        let posts = self.lock();
        posts
            .by_owner
            .get(&caller.user_id)
            .map(|ids| {
                ids.iter()
                    .rev()
                    .filter_map(|id| posts.by_id.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Any post, for any signed-in caller: the timeline is readable by everyone signed in.
    pub fn get(&self, id: PostId) -> Result<Post, Error> {
        self.lock().by_id.get(&id).cloned().ok_or(Error::NotFound)
    }

    /// Deletes a post if the caller owns it or is an administrator.
    pub fn delete(&self, caller: &Identity, id: PostId) -> Result<(), Error> {
        let mut posts = self.lock();
        let owner = posts
            .by_id
            .get(&id)
            .map(|p| p.owner_id.clone())
            .ok_or(Error::NotFound)?;
        if owner != caller.user_id && !caller.has_role(ADMIN_ROLE) {
            return Err(Error::Forbidden);
        }
        posts.by_id.remove(&id);
        if let Some(ids) = posts.by_owner.get_mut(&owner) {
            ids.retain(|p| *p != id);
        }
        log::info!("post {id} deleted by user {}", caller.user_id);
        Ok(())
    }
}
