//! Resume tokens: the chat domain's [`SessionTokens`] port, signed with an [`HmacKey`].
//!
//! Format: `base64url(userId) "." issuedAtMs "." generation "." base64url(HMAC-SHA256(key,
//! "resume2:" userId ":" issuedAtMs ":" generation))`, no padding. The signature is checked in
//! constant time (`Mac::verify_slice`). Whether a genuine token is still good (its age, its
//! generation against the user's "sign out everywhere") is the chat domain's rule, from the
//! [`ResumeClaims`] this adapter returns.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chat_domain::{ResumeClaims, SessionTokens};
use hmac::Mac as _;
use voice_domain::UserId;

use crate::key::{HmacKey, HmacSha256};

/// The issue time given to resume tokens of the earlier shape (which carry none): the day
/// expiring tokens were released (2026-12-02T00:00:00Z), so those tokens stop working one token
/// lifetime (`--resume-token-ttl-days`) later.
pub const LEGACY_RESUME_ISSUED_AT_MS: u64 = 1_796_169_600_000;

/// The [`SessionTokens`] adapter: resume tokens are HMACs of the user id, issue time and token
/// generation under `key`.
#[derive(Clone, Debug)]
pub struct ResumeTokens {
    key: HmacKey,
}

impl ResumeTokens {
    /// Resume tokens signed with `key`.
    pub fn new(key: HmacKey) -> Self {
        Self { key }
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
        let mut mac = self.key.mac();
        mac.update(b"resume:");
        mac.update(user.as_bytes());
        mac.verify_slice(&sig).ok()?;
        UserId::parse(user).ok()
    }

    fn resume_mac(&self, user: &str, issued_at_ms: u64, generation: u64) -> HmacSha256 {
        let mut mac = self.key.mac();
        mac.update(b"resume2:");
        mac.update(format!("{user}:{issued_at_ms}:{generation}").as_bytes());
        mac
    }
}

impl SessionTokens for ResumeTokens {
    /// A resume token for `claims`: lets a reloaded page say `hello` as the same user, until
    /// it expires or the user signs out everywhere (the chat rules decide, from its claims).
    fn issue(&self, claims: &ResumeClaims) -> String {
        let user = claims.user.as_str();
        let mac = self.resume_mac(user, claims.issued_at_ms, claims.generation);
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!(
            "{}.{}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(user.as_bytes()),
            claims.issued_at_ms,
            claims.generation
        )
    }

    /// The claims of a resume token, if it is ours (checked in constant time).
    ///
    /// Tokens of the earlier `<user>.<sig>` shape (before tokens expired) still identify their
    /// user, as generation 0 issued at [`LEGACY_RESUME_ISSUED_AT_MS`]: an upgrade must not turn
    /// every admin into a stranger to their own rooms. The next `hello` hands out a new-shape
    /// token; the old one expires a token lifetime after the upgrade's release day, and "sign
    /// out everywhere" revokes it at once (its generation 0 is then too old).
    fn verify(&self, token: &str) -> Option<ResumeClaims> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use voice_domain::ports::Secret;

    fn key() -> HmacKey {
        HmacKey::new(Secret::new("0123456789abcdef0123456789abcdef"))
    }

    fn tokens() -> ResumeTokens {
        ResumeTokens::new(key())
    }

    #[test]
    fn resume_tokens_round_trip_and_cannot_be_forged() {
        let alice = UserId::parse("alice").unwrap();
        let resume = ResumeClaims {
            user: alice.clone(),
            issued_at_ms: 1_700_000_000_000,
            generation: 3,
        };
        let text = tokens().issue(&resume);
        assert_eq!(tokens().verify(&text), Some(resume));
        let (head, sig) = text.rsplit_once('.').unwrap();
        let (user, rest) = head.split_once('.').unwrap();
        let bob = URL_SAFE_NO_PAD.encode("bob");
        assert_eq!(tokens().verify(&format!("{bob}.{rest}.{sig}")), None);
        // A moved issue time or generation breaks the signature.
        let later = rest.replace("1700000000000", "1800000000000");
        assert_eq!(tokens().verify(&format!("{user}.{later}.{sig}")), None);
        let older = rest.replace(".3", ".9");
        assert_eq!(tokens().verify(&format!("{user}.{older}.{sig}")), None);
        // Signed with another key.
        let foreign = ResumeTokens::new(HmacKey::new(Secret::new("another-key-another-key")));
        assert_eq!(foreign.verify(&text), None);
        // Garbage.
        for bad in ["", ".", "a.b.c.d", "a.b.c.d.e", &format!("{text}.x")] {
            assert_eq!(tokens().verify(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_token_format_is_unchanged() {
        // Pinned: a token issued by the previous release must still verify after an upgrade.
        let claims = ResumeClaims {
            user: UserId::parse("alice").unwrap(),
            issued_at_ms: 1_700_000_000_000,
            generation: 3,
        };
        let mut mac = key().mac();
        mac.update(b"resume2:alice:1700000000000:3");
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let expected = format!("YWxpY2U.1700000000000.3.{sig}");
        assert_eq!(tokens().issue(&claims), expected);
        assert_eq!(tokens().verify(&expected), Some(claims));
    }

    #[test]
    fn resume_tokens_of_the_earlier_shape_still_name_their_user() {
        // Built exactly as the previous release did: base64url(user) "." HMAC("resume:" user).
        let mut mac = key().mac();
        mac.update(b"resume:alice");
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let old = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("alice"));
        assert_eq!(
            tokens().verify(&old),
            Some(ResumeClaims {
                user: UserId::parse("alice").unwrap(),
                issued_at_ms: LEGACY_RESUME_ISSUED_AT_MS,
                generation: 0,
            })
        );
        // Forged or for another user: refused as before.
        let bob = URL_SAFE_NO_PAD.encode("bob");
        assert_eq!(tokens().verify(&format!("{bob}.{sig}")), None);
        assert_eq!(tokens().verify(&format!("{old}x")), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", tokens()).contains("0123456789"));
    }
}
