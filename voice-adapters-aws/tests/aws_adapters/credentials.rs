//! StsCredentials against moto's STS, with the AssumeRole request captured on its way out so
//! that the session policy actually sent can be checked (moto accepts any policy).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use voice_adapters_aws::credentials::session_policy;
use voice_adapters_aws::testing::TEST_ROLE_ARN;
use voice_adapters_aws::StsCredentials;
use voice_domain::ports::{CredentialIssuer, CredentialRequest, Credentials};
use voice_domain::room::ChannelGrant;
use voice_domain::{ChannelRole, ClientId};

use crate::support::*;

fn request(ttl: Duration) -> CredentialRequest {
    CredentialRequest {
        voice_room: vr("vr-1"),
        user: user("bob#2"),
        connection: conn("c=b"),
        client_id: ClientId::from_connection(&conn("c=b")).unwrap(),
        grants: vec![
            ChannelGrant {
                channel: channel("own").arn,
                role: ChannelRole::Master,
            },
            ChannelGrant {
                channel: channel("peer-1").arn,
                role: ChannelRole::Viewer,
            },
            ChannelGrant {
                channel: channel("peer-2").arn,
                role: ChannelRole::Viewer,
            },
        ],
        ttl,
    }
}

fn issuer(m: &Moto, capture: &Capture) -> StsCredentials {
    let conf = aws_sdk_sts::config::Builder::from(&m.server.sdk_config())
        .interceptor(capture.clone())
        .build();
    StsCredentials::new(
        aws_sdk_sts::Client::from_conf(conf),
        TEST_ROLE_ARN,
        "us-east-1",
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn assume_role_returns_session_credentials_scoped_by_the_session_policy() {
    let Some(m) = moto().await else { return };
    let capture = Capture::default();
    let req = request(Duration::from_secs(3600));
    let before = now_ms();
    let issued = issuer(&m, &capture).issue(&req).await.unwrap();

    let Credentials::AwsSession {
        access_key_id,
        secret_access_key,
        session_token,
        region,
    } = &issued.credentials
    else {
        panic!(
            "expected AWS session credentials, got {:?}",
            issued.credentials
        );
    };
    assert!(!access_key_id.is_empty());
    assert!(!secret_access_key.expose().is_empty());
    assert!(!session_token.expose().is_empty());
    assert_eq!(region, "us-east-1");
    let expires = issued.expires_at.as_millis();
    assert!(
        expires >= before + 3_500_000 && expires <= now_ms() + 3_700_000,
        "expiry {expires} is about an hour after {before}"
    );
    assert!(
        !format!("{issued:?}").contains(secret_access_key.expose()),
        "secret redacted"
    );

    let bodies = capture.bodies();
    assert_eq!(bodies.len(), 1);
    let form = form_decode(&bodies[0]);
    assert_eq!(form["Action"], "AssumeRole");
    assert_eq!(form["RoleArn"], TEST_ROLE_ARN);
    assert_eq!(form["RoleSessionName"], "voice-bob_2");
    assert_eq!(form["DurationSeconds"], "3600");
    let sent: serde_json::Value = serde_json::from_str(&form["Policy"]).unwrap();
    assert_eq!(sent, session_policy(&req.grants));
    assert_eq!(sent["Version"], "2012-10-17");
    assert!(!form["Policy"].contains('*'), "no wildcard resources");
    assert!(form["Policy"].contains("kinesisvideo:ConnectAsMaster"));
}

#[tokio::test]
async fn short_ttls_are_raised_to_the_sts_minimum() {
    let Some(m) = moto().await else { return };
    let capture = Capture::default();
    issuer(&m, &capture)
        .issue(&request(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(form_decode(&capture.bodies()[0])["DurationSeconds"], "900");
}

#[tokio::test]
async fn a_policy_that_cannot_fit_is_refused_before_calling_sts() {
    let Some(m) = moto().await else { return };
    let capture = Capture::default();
    let mut req = request(Duration::from_secs(3600));
    req.grants = (0..25)
        .map(|i| ChannelGrant {
            channel: channel(&format!("p{i}")).arn,
            role: ChannelRole::Viewer,
        })
        .collect();
    let err = issuer(&m, &capture).issue(&req).await.unwrap_err();
    let voice_domain::ports::CredentialError::Unavailable(f) = err;
    assert!(!f.retryable);
    assert!(f.message.contains("2048"), "{}", f.message);
    assert!(capture.bodies().is_empty(), "STS was not called");
}
