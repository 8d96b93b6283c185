//! ICE servers for clients, with TURN REST credentials as coturn's `use-auth-secret` expects:
//! username `"<unix expiry>:<userId>"`, credential `base64(HMAC-SHA1(secret, username))`.
//! Only `turn:`/`turns:` URLs carry credentials; STUN needs none.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use voice_domain::ports::{IceServer, Secret};
use voice_domain::Timestamp;

/// The configured STUN/TURN URLs and how to sign TURN credentials.
#[derive(Clone, Debug)]
pub struct IceConfig {
    stun: Vec<String>,
    turn: Vec<String>,
    turn_secret: Option<Secret>,
    turn_ttl: Duration,
}

impl IceConfig {
    /// Splits `urls` into STUN and TURN ones.
    pub fn new(urls: &[String], turn_secret: Option<Secret>, turn_ttl: Duration) -> Self {
        let (turn, stun) = urls
            .iter()
            .cloned()
            .partition(|u| u.starts_with("turn:") || u.starts_with("turns:"));
        Self {
            stun,
            turn,
            turn_secret,
            turn_ttl,
        }
    }

    /// The ICE servers for `user` at `now`: one entry for the STUN URLs, one for the TURN URLs
    /// with fresh credentials (when a TURN secret is configured). Empty when none are configured.
    pub fn servers_for(&self, user: &str, now: Timestamp) -> Vec<IceServer> {
        let mut out = Vec::new();
        if !self.stun.is_empty() {
            out.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            let (username, credential) = match &self.turn_secret {
                Some(secret) => {
                    let (u, c) = turn_credentials(secret, user, now.plus(self.turn_ttl).as_secs());
                    (Some(u), Some(c))
                }
                None => (None, None),
            };
            out.push(IceServer {
                urls: self.turn.clone(),
                username,
                credential,
            });
        }
        out
    }
}

/// coturn REST credentials for `user`, valid until `expiry` (Unix seconds).
pub fn turn_credentials(secret: &Secret, user: &str, expiry: u64) -> (String, Secret) {
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    (username, Secret::new(credential))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_match_coturn_rest_api() {
        // Reference value computed independently:
        // printf '1700000000:alice' | openssl dgst -sha1 -hmac 'north-secret' -binary | base64
        let (u, c) = turn_credentials(&Secret::new("north-secret"), "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        assert_eq!(c.expose(), REFERENCE);
    }

    const REFERENCE: &str = include_str!("../../tests/fixtures/turn_reference.txt");

    #[test]
    fn only_turn_urls_get_credentials() {
        let cfg = IceConfig::new(
            &[
                "stun:stun.example.org:3478".into(),
                "turn:turn.example.org:3478?transport=udp".into(),
                "turns:turn.example.org:5349".into(),
            ],
            Some(Secret::new("0123456789abcdef")),
            Duration::from_secs(60),
        );
        let servers = cfg.servers_for("bob", Timestamp::from_millis(1_000_000));
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, vec!["stun:stun.example.org:3478"]);
        assert!(servers[0].username.is_none() && servers[0].credential.is_none());
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1060:bob"));
        assert!(servers[1].credential.is_some());
        assert!(IceConfig::new(&[], None, Duration::from_secs(1))
            .servers_for("x", Timestamp::from_millis(0))
            .is_empty());
    }
}
