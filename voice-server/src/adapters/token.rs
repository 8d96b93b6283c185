//! Voice tokens: what `getVoiceCredentials` hands a participant on the self-hosted server, and
//! what the signaling relay checks on every `signal`.
//!
//! Format: `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first part))`, no padding.
//! Claims: `{"voiceRoomId", "userId", "grants": [{"channelArn", "role"}], "exp"}` with `exp` in
//! seconds since the Unix epoch. The signature is checked in constant time (`Mac::verify_slice`)
//! before the claims are even parsed, so a forged token learns nothing from timing or errors.
//!
//! The same key signs resume tokens (`hello` → same user id after a reload); those sign a
//! different message shape (`resume2:<userId>:<issuedAtMs>:<generation>`, which a base64url
//! payload can never be).

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chat_domain::ResumeClaims;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use voice_adapters_memory::SystemClock;
use voice_domain::ports::{
    Clock, CredentialError, CredentialIssuer, CredentialRequest, Credentials, IssuedCredentials,
    Secret,
};
use voice_domain::{ChannelRole, Timestamp, UserId};

type HmacSha256 = Hmac<Sha256>;

/// The issue time given to resume tokens of the earlier shape (which carry none): the day
/// expiring tokens were released (2026-12-02T00:00:00Z), so those tokens stop working one token
/// lifetime (`--resume-token-ttl-days`) later.
pub const LEGACY_RESUME_ISSUED_AT_MS: u64 = 1_796_169_600_000;

/// One (channel, role) pair a token allows, as serialised in its claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenGrant {
    /// The channel's relay id (`arn:local:voice:channel/voice-…`).
    pub channel_arn: String,
    /// `MASTER` or `VIEWER`.
    pub role: ChannelRole,
}

/// What a token says; only trusted after [`TokenKey::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The voice room the token is for.
    pub voice_room_id: String,
    /// The participant it was issued to.
    pub user_id: String,
    /// Exactly the participant's mesh plan at issue time.
    pub grants: Vec<TokenGrant>,
    /// Expiry, seconds since the Unix epoch; invalid from that second on.
    pub exp: u64,
}

impl Claims {
    /// Whether the token allows `role` on `channel_arn`.
    pub fn allows(&self, channel_arn: &str, role: ChannelRole) -> bool {
        self.grants
            .iter()
            .any(|g| g.channel_arn == channel_arn && g.role == role)
    }
}

/// Why a token was refused. Deliberately coarse on the wire (all are `UNAUTHORIZED`); the
/// variant is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `payload.signature`, or not base64url.
    #[error("the token is malformed")]
    Malformed,
    /// The signature does not match (forged, tampered, or signed with another key).
    #[error("the token signature is invalid")]
    BadSignature,
    /// Signed by us but past its `exp`.
    #[error("the token has expired")]
    Expired,
}

/// The HMAC key, shared by the issuer and the relay.
#[derive(Clone)]
pub struct TokenKey {
    key: Secret,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// A key from the configured secret.
    pub fn new(secret: Secret) -> Self {
        Self { key: secret }
    }

    /// A fresh random 256-bit key (tokens then die with the process).
    pub fn random() -> Self {
        Self::new(Self::random_secret())
    }

    /// A fresh random 256-bit key as text, for storing it (the data directory keeps one so
    /// resume tokens survive restarts).
    pub fn random_secret() -> Secret {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Secret::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC accepts keys of any length")
    }

    /// Signs `claims` into a token.
    pub fn sign(&self, claims: &Claims) -> Secret {
        let json = serde_json::to_vec(claims).expect("claims always serialise");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Secret::new(format!("{payload}.{sig}"))
    }

    /// Checks the signature (constant time), then the expiry against `now`, and returns the
    /// claims.
    ///
    /// # Errors
    /// [`TokenError`].
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, TokenError> {
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now.as_millis() >= claims.exp.saturating_mul(1000) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The user of a token of the earlier `base64url(user) "." base64url(HMAC("resume:" user))`
    /// shape, if it is one of ours.
    fn legacy_resume_user(&self, token: &str) -> Option<UserId> {
        let (user, sig) = token.split_once('.')?;
        if sig.contains('.') {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(b"resume:");
        mac.update(user.as_bytes());
        mac.verify_slice(&sig).ok()?;
        UserId::parse(user).ok()
    }

    fn resume_mac(&self, user: &str, issued_at_ms: u64, generation: u64) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(b"resume2:");
        mac.update(format!("{user}:{issued_at_ms}:{generation}").as_bytes());
        mac
    }

    /// A resume token for `claims`: lets a reloaded page say `hello` as the same user, until
    /// it expires or the user signs out everywhere (the chat rules decide, from its claims).
    pub fn resume_token(&self, claims: &ResumeClaims) -> Secret {
        let user = claims.user.as_str();
        let mac = self.resume_mac(user, claims.issued_at_ms, claims.generation);
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Secret::new(format!(
            "{}.{}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(user.as_bytes()),
            claims.issued_at_ms,
            claims.generation
        ))
    }

    /// The claims of a resume token, if it is ours (checked in constant time).
    ///
    /// Tokens of the earlier `<user>.<sig>` shape (before tokens expired) still identify their
    /// user, as generation 0 issued at [`LEGACY_RESUME_ISSUED_AT_MS`]: an upgrade must not turn
    /// every admin into a stranger to their own rooms. The next `hello` hands out a new-shape
    /// token; the old one expires a token lifetime after the upgrade's release day, and "sign
    /// out everywhere" revokes it at once (its generation 0 is then too old).
    pub fn resume_claims(&self, token: &str) -> Option<ResumeClaims> {
        if let Some(user) = self.legacy_resume_user(token) {
            return Some(ResumeClaims {
                user,
                issued_at_ms: LEGACY_RESUME_ISSUED_AT_MS,
                generation: 0,
            });
        }
        let mut parts = token.split('.');
        let (user, issued, generation, sig) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
        let issued_at_ms: u64 = issued.parse().ok()?;
        let generation: u64 = generation.parse().ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.resume_mac(&user, issued_at_ms, generation)
            .verify_slice(&sig)
            .ok()?;
        Some(ResumeClaims {
            user: UserId::parse(user).ok()?,
            issued_at_ms,
            generation,
        })
    }
}

/// The [`CredentialIssuer`] of the self-hosted server: signed voice tokens scoped to exactly the
/// participant's mesh plan.
#[derive(Clone, Debug)]
pub struct TokenIssuer {
    key: TokenKey,
    clock: SystemClock,
}

impl TokenIssuer {
    /// An issuer signing with `key`.
    pub fn new(key: TokenKey) -> Self {
        Self {
            key,
            clock: SystemClock,
        }
    }

    /// Claims for `request` issued at `now`: `exp` is whole seconds, rounded down, so the token
    /// never outlives the requested TTL, and `expires_at` says exactly when it stops working.
    pub fn claims_for(request: &CredentialRequest, now: Timestamp) -> (Claims, Timestamp) {
        let exp = now.plus(request.ttl).as_secs();
        let claims = Claims {
            voice_room_id: request.voice_room.to_string(),
            user_id: request.user.to_string(),
            grants: request
                .grants
                .iter()
                .map(|g| TokenGrant {
                    channel_arn: g.channel.to_string(),
                    role: g.role,
                })
                .collect(),
            exp,
        };
        (claims, Timestamp::from_millis(exp.saturating_mul(1000)))
    }
}

#[async_trait]
impl CredentialIssuer for TokenIssuer {
    async fn issue(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, CredentialError> {
        let (claims, expires_at) = Self::claims_for(request, self.clock.now());
        Ok(IssuedCredentials {
            credentials: Credentials::Token {
                token: self.key.sign(&claims),
            },
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            voice_room_id: "vr".into(),
            user_id: "alice".into(),
            grants: vec![TokenGrant {
                channel_arn: "arn:local:voice:channel/voice-1".into(),
                role: ChannelRole::Master,
            }],
            exp,
        }
    }

    fn key() -> TokenKey {
        TokenKey::new(Secret::new("0123456789abcdef0123456789abcdef"))
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let t = key().sign(&claims(100));
        let c = key()
            .verify(t.expose(), Timestamp::from_millis(99_999))
            .unwrap();
        assert_eq!(c, claims(100));
        assert!(c.allows("arn:local:voice:channel/voice-1", ChannelRole::Master));
        assert!(!c.allows("arn:local:voice:channel/voice-1", ChannelRole::Viewer));
        assert_eq!(
            key().verify(t.expose(), Timestamp::from_millis(100_000)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tampered_forged_and_garbage_tokens_are_refused() {
        let now = Timestamp::from_millis(0);
        let t = key().sign(&claims(100));
        let (payload, sig) = t.expose().split_once('.').unwrap();
        // Same signature over claims naming another user.
        let mut other = claims(100);
        other.user_id = "mallory".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(
            key().verify(&format!("{forged_payload}.{sig}"), now),
            Err(TokenError::BadSignature)
        );
        // Signed with another key.
        let foreign = TokenKey::new(Secret::new("another-key-another-key")).sign(&claims(100));
        assert_eq!(
            key().verify(foreign.expose(), now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key().verify(payload, now), Err(TokenError::Malformed));
        assert_eq!(key().verify("a.!!!", now), Err(TokenError::Malformed));
        assert_eq!(key().verify("", now), Err(TokenError::Malformed));
    }

    #[test]
    fn resume_tokens_round_trip_and_cannot_be_forged() {
        let alice = UserId::parse("alice").unwrap();
        let resume = ResumeClaims {
            user: alice.clone(),
            issued_at_ms: 1_700_000_000_000,
            generation: 3,
        };
        let t = key().resume_token(&resume);
        assert_eq!(key().resume_claims(t.expose()), Some(resume));
        let text = t.expose();
        let (head, sig) = text.rsplit_once('.').unwrap();
        let (user, rest) = head.split_once('.').unwrap();
        let bob = URL_SAFE_NO_PAD.encode("bob");
        assert_eq!(key().resume_claims(&format!("{bob}.{rest}.{sig}")), None);
        // A moved issue time or generation breaks the signature.
        let later = rest.replace("1700000000000", "1800000000000");
        assert_eq!(key().resume_claims(&format!("{user}.{later}.{sig}")), None);
        let older = rest.replace(".3", ".9");
        assert_eq!(key().resume_claims(&format!("{user}.{older}.{sig}")), None);
        // A voice token is not a resume token.
        assert_eq!(key().resume_claims(key().sign(&claims(1)).expose()), None);
    }

    #[test]
    fn resume_tokens_of_the_earlier_shape_still_name_their_user() {
        // Built exactly as the previous release did: base64url(user) "." HMAC("resume:" user).
        let mut mac = key().mac();
        mac.update(b"resume:alice");
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let old = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("alice"));
        assert_eq!(
            key().resume_claims(&old),
            Some(ResumeClaims {
                user: UserId::parse("alice").unwrap(),
                issued_at_ms: LEGACY_RESUME_ISSUED_AT_MS,
                generation: 0,
            })
        );
        // Forged or for another user: refused as before.
        let bob = URL_SAFE_NO_PAD.encode("bob");
        assert_eq!(key().resume_claims(&format!("{bob}.{sig}")), None);
        assert_eq!(key().resume_claims(&format!("{old}x")), None);
    }

    #[test]
    fn debug_never_shows_the_key_or_token() {
        let t = key().sign(&claims(1));
        assert!(!format!("{:?}{t:?}", key()).contains("0123456789"));
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
