//! [`CredentialIssuer`] on STS: `AssumeRole` on `KVS_ROLE_ARN` with an inline session policy
//! that narrows the role to exactly one participant's (channel, role) grants.
//!
//! The original design handed out the role's own permissions (`Resource: "*"`), so anyone with
//! the credentials could join any channel in the account. A session policy can only narrow what
//! the role allows: the effective permissions are the intersection, so the role may stay broad
//! (`channel/voice-*`) while each participant's credentials reach only its own channel as master
//! and its peers' channels as viewer, plus the calls a browser needs to connect to those same
//! channels (`DescribeSignalingChannel`, `GetSignalingChannelEndpoint`, `GetIceServerConfig`).

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sts::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde_json::{json, Value};
use tracing::{debug, warn};
use voice_domain::ports::{
    CredentialError, CredentialIssuer, CredentialRequest, Credentials, IssuedCredentials,
    PortFailure, Secret,
};
use voice_domain::room::ChannelGrant;
use voice_domain::{ChannelRole, Timestamp, UserId};

use crate::errors::{sdk_failure, PolicyError};

/// The only current IAM policy language version (the original's `2012-10-16` is invalid).
pub const POLICY_VERSION: &str = "2012-10-17";
/// STS's limit on an inline session policy's plain text.
pub const MAX_POLICY_CHARS: usize = 2048;
/// STS's shortest session.
pub const MIN_SESSION: Duration = Duration::from_secs(900);
/// STS's longest session for role chaining (a Lambda's role assuming another role).
pub const MAX_SESSION: Duration = Duration::from_secs(3600);

/// What a master may do on its own channel.
const MASTER_ACTIONS: &[&str] = &[
    "kinesisvideo:ConnectAsMaster",
    "kinesisvideo:DescribeSignalingChannel",
    "kinesisvideo:GetSignalingChannelEndpoint",
    "kinesisvideo:GetIceServerConfig",
];
/// What a viewer may do on a peer's channel.
const VIEWER_ACTIONS: &[&str] = &[
    "kinesisvideo:ConnectAsViewer",
    "kinesisvideo:DescribeSignalingChannel",
    "kinesisvideo:GetSignalingChannelEndpoint",
    "kinesisvideo:GetIceServerConfig",
];

/// The session policy allowing exactly `grants`: one statement for the master channels with
/// `ConnectAsMaster`, one for the viewer channels with `ConnectAsViewer`, each also allowing the
/// three calls needed to connect to those channels. Grouping by role rather than by action lists
/// each ARN once, which keeps ten channels (one master + nine viewer ARNs of ~110 characters)
/// well under STS's 2 048 characters. Never a wildcard resource.
pub fn session_policy(grants: &[ChannelGrant]) -> Value {
    let arns = |role: ChannelRole| -> Vec<&str> {
        grants
            .iter()
            .filter(|g| g.role == role)
            .map(|g| g.channel.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let mut statements = Vec::new();
    for (role, actions) in [
        (ChannelRole::Master, MASTER_ACTIONS),
        (ChannelRole::Viewer, VIEWER_ACTIONS),
    ] {
        let resources = arns(role);
        if !resources.is_empty() {
            statements.push(json!({
                "Effect": "Allow",
                "Action": actions,
                "Resource": resources,
            }));
        }
    }
    json!({ "Version": POLICY_VERSION, "Statement": statements })
}

/// [`session_policy`] as the compact JSON STS receives, checked against STS's size limit.
///
/// # Errors
/// [`PolicyError::NoGrants`] for an empty grant list; [`PolicyError::TooLong`] if the policy
/// would exceed [`MAX_POLICY_CHARS`].
pub fn session_policy_json(grants: &[ChannelGrant]) -> Result<String, PolicyError> {
    if grants.is_empty() {
        return Err(PolicyError::NoGrants);
    }
    let text = session_policy(grants).to_string();
    let len = text.chars().count();
    if len > MAX_POLICY_CHARS {
        return Err(PolicyError::TooLong {
            grants: grants.len(),
            len,
            max: MAX_POLICY_CHARS,
        });
    }
    Ok(text)
}

/// A role session name for `user`: `voice-` and the user id with every character outside
/// STS's `[\w+=,.@-]` replaced by `_`, cut to 64 characters. It shows up in CloudTrail, so an
/// operator can see whose credentials made a call.
pub fn role_session_name(user: &UserId) -> String {
    let cleaned: String = user
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("voice-{cleaned}").chars().take(64).collect()
}

/// The session length STS accepts for a requested TTL: between 15 minutes and one hour.
pub fn session_duration(ttl: Duration) -> Duration {
    ttl.clamp(MIN_SESSION, MAX_SESSION)
}

/// Credentials from STS `AssumeRole`, scoped by a session policy. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StsCredentials {
    client: Client,
    role_arn: String,
    region: String,
}

impl StsCredentials {
    /// An issuer assuming `role_arn` (`KVS_ROLE_ARN`) through a client built once at start-up;
    /// `region` is the channels' region, which clients need to sign their calls.
    pub fn new(client: Client, role_arn: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            client,
            role_arn: role_arn.into(),
            region: region.into(),
        }
    }
}

fn unavailable(f: PortFailure) -> CredentialError {
    CredentialError::Unavailable(f)
}

#[async_trait]
impl CredentialIssuer for StsCredentials {
    #[tracing::instrument(skip(self, request), fields(voice_room_id = %request.voice_room, user_id = %request.user, grants = request.grants.len()))]
    async fn issue(
        &self,
        request: &CredentialRequest,
    ) -> Result<IssuedCredentials, CredentialError> {
        let policy = session_policy_json(&request.grants).map_err(|e| {
            warn!(error = %e, "cannot build a session policy");
            unavailable(PortFailure::permanent(e.to_string()))
        })?;
        let seconds = i32::try_from(session_duration(request.ttl).as_secs()).unwrap_or(3600);
        let out = self
            .client
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(role_session_name(&request.user))
            .duration_seconds(seconds)
            .policy(policy)
            .send()
            .await
            .map_err(|e| {
                if e.code() == Some("PackedPolicyTooLarge") {
                    let err = PolicyError::PackedTooLarge {
                        grants: request.grants.len(),
                        message: e.message().unwrap_or("no message").to_owned(),
                    };
                    warn!(error = %err, "session policy too large for STS");
                    return unavailable(PortFailure::permanent(err.to_string()));
                }
                unavailable(sdk_failure("sts:AssumeRole", &e))
            })?;
        // STS reports how close the packed policy is to its limit, a percentage (PackedPolicySize,
        // now SessionTokenUtilization in the SDK): logged so that
        // an operator sees a room approaching PackedPolicyTooLarge before it happens.
        if let Some(size) = out.session_token_utilization {
            if size >= 80 {
                warn!(
                    packed_policy_size = size,
                    "session policy is near STS's packed size limit"
                );
            } else {
                debug!(
                    packed_policy_size = size,
                    "session policy packed size (% of STS's limit)"
                );
            }
        }
        let creds = out.credentials.ok_or_else(|| {
            unavailable(PortFailure::retryable(
                "sts:AssumeRole: response has no Credentials",
            ))
        })?;
        let expires_at = Timestamp::from_millis(
            u64::try_from(creds.expiration.to_millis().unwrap_or(0)).unwrap_or(0),
        );
        Ok(IssuedCredentials {
            credentials: Credentials::AwsSession {
                access_key_id: creds.access_key_id,
                secret_access_key: Secret::new(creds.secret_access_key),
                session_token: Secret::new(creds.session_token),
                region: self.region.clone(),
            },
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voice_domain::ChannelArn;

    fn arn(i: usize) -> ChannelArn {
        // As long as real ones: voice-{uuid} and a 13-digit creation time.
        ChannelArn::parse(format!(
            "arn:aws:kinesisvideo:ap-southeast-2:123456789012:channel/voice-{i:08}-d9cb-469f-a165-70867728950e/1700000000000"
        ))
        .unwrap()
    }

    fn grants(n: usize) -> Vec<ChannelGrant> {
        (0..n)
            .map(|i| ChannelGrant {
                channel: arn(i),
                role: if i == 0 {
                    ChannelRole::Master
                } else {
                    ChannelRole::Viewer
                },
            })
            .collect()
    }

    fn allowed(policy: &Value) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for st in policy["Statement"].as_array().unwrap() {
            assert_eq!(st["Effect"], "Allow");
            for a in st["Action"].as_array().unwrap() {
                for r in st["Resource"].as_array().unwrap() {
                    out.insert((
                        a.as_str().unwrap().to_owned(),
                        r.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn policy_allows_exactly_the_grants_and_nothing_wild() {
        let g = grants(3);
        let p = session_policy(&g);
        assert_eq!(p["Version"], "2012-10-17");
        let got = allowed(&p);
        let mut want = BTreeSet::new();
        for (i, grant) in g.iter().enumerate() {
            let connect = if i == 0 {
                "kinesisvideo:ConnectAsMaster"
            } else {
                "kinesisvideo:ConnectAsViewer"
            };
            for a in [
                connect,
                "kinesisvideo:DescribeSignalingChannel",
                "kinesisvideo:GetSignalingChannelEndpoint",
                "kinesisvideo:GetIceServerConfig",
            ] {
                want.insert((a.to_owned(), grant.channel.as_str().to_owned()));
            }
        }
        assert_eq!(got, want);
        assert!(!p.to_string().contains('*'));
    }

    #[test]
    fn a_lone_master_gets_no_viewer_statement() {
        let p = session_policy(&grants(1));
        assert_eq!(p["Statement"].as_array().unwrap().len(), 1);
        assert!(!p.to_string().contains("ConnectAsViewer"));
    }

    #[test]
    fn ten_channels_fit_and_more_are_refused() {
        let text = session_policy_json(&grants(10)).unwrap();
        assert!(text.len() <= MAX_POLICY_CHARS, "{}", text.len());
        assert!(!text.contains(' ') && !text.contains('\n'), "compact JSON");
        assert!(matches!(
            session_policy_json(&grants(20)),
            Err(PolicyError::TooLong { grants: 20, .. })
        ));
        assert_eq!(session_policy_json(&[]), Err(PolicyError::NoGrants));
    }

    #[test]
    fn session_names_are_sanitized_and_short() {
        let u = UserId::parse("jürgen#1+x@y.z").unwrap();
        assert_eq!(role_session_name(&u), "voice-j_rgen_1+x@y.z");
        let long = UserId::parse("a".repeat(128)).unwrap();
        assert_eq!(role_session_name(&long).len(), 64);
    }

    #[test]
    fn durations_are_clamped_to_what_sts_accepts() {
        assert_eq!(session_duration(Duration::from_secs(60)), MIN_SESSION);
        assert_eq!(session_duration(Duration::from_secs(7200)), MAX_SESSION);
        assert_eq!(
            session_duration(Duration::from_secs(1800)),
            Duration::from_secs(1800)
        );
    }
}
