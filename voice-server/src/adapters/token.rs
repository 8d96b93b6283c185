//! Voice tokens: what `getVoiceCredentials` hands a participant on the self-hosted server, and
//! what the signaling relay checks on every `signal`.
//!
//! Format: `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first part))`, no padding.
//! Claims: `{"voiceRoomId", "userId", "grants": [{"channelArn", "role"}], "exp"}` with `exp` in
//! seconds since the Unix epoch. The signature is checked in constant time (`Mac::verify_slice`)
//! before the claims are even parsed, so a forged token learns nothing from timing or errors.
//!
//! The same [`HmacKey`] signs resume tokens (`hello` → same user id after a reload; the
//! `voice_adapters_std::ResumeTokens` adapter); those sign a different message shape
//! (`resume2:<userId>:<issuedAtMs>:<generation>`, which a base64url payload can never be).

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac as _;
use serde::{Deserialize, Serialize};
use voice_adapters_std::{HmacKey, SystemClock};
use voice_domain::ports::{
    Clock, CredentialError, CredentialIssuer, CredentialRequest, Credentials, IssuedCredentials,
    Secret,
};
use voice_domain::{ChannelRole, Timestamp};

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

/// The voice-token key, shared by the issuer and the relay: the server's [`HmacKey`].
#[derive(Clone, Debug)]
pub struct TokenKey {
    key: HmacKey,
}

impl TokenKey {
    /// A key from the configured secret.
    pub fn new(secret: Secret) -> Self {
        Self {
            key: HmacKey::new(secret),
        }
    }

    /// Signs `claims` into a token.
    pub fn sign(&self, claims: &Claims) -> Secret {
        let json = serde_json::to_vec(claims).expect("claims always serialise");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.key.mac();
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
        let mut mac = self.key.mac();
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
    fn a_voice_token_is_not_a_resume_token() {
        use chat_domain::SessionTokens as _;
        let resume = voice_adapters_std::ResumeTokens::new(HmacKey::new(Secret::new(
            "0123456789abcdef0123456789abcdef",
        )));
        assert_eq!(resume.verify(key().sign(&claims(1)).expose()), None);
    }

    #[test]
    fn debug_never_shows_the_key_or_token() {
        let t = key().sign(&claims(1));
        assert!(!format!("{:?}{t:?}", key()).contains("0123456789"));
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
