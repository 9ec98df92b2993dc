//! Where a request came from: recorded on the sessions it opens and in the audit trail, and
//! the key of the per-address throttles.

use std::net::IpAddr;

/// Longest user agent kept; the rest is cut off.
pub const MAX_USER_AGENT_CHARS: usize = 512;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (see `server.trusted_proxies`); `None` for the command line.
    pub ip: Option<IpAddr>,
    /// The `User-Agent` header, at most [`MAX_USER_AGENT_CHARS`] characters.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> ClientInfo {
        ClientInfo {
            ip,
            user_agent: user_agent.map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
        }
    }

    /// The address as stored in a session row or audit event.
    pub fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_user_agents_are_cut() {
        let c = ClientInfo::new(None, Some(&"é".repeat(600)));
        assert_eq!(c.user_agent.unwrap().chars().count(), MAX_USER_AGENT_CHARS);
    }
}
