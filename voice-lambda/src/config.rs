//! The Lambda's configuration, read once at cold start from the original's environment
//! variables.
//!
//! The AWS settings (tables, role, region, management endpoint, stack id) are parsed by
//! `voice-adapters-aws`'s one parser, [`AwsConfig::from_lookup`]; this module adds only what is
//! the Lambda's own (the voice room capacity) and reports its problems in the same error, so
//! that every missing or invalid variable is named at once.

use std::time::Duration;
use voice_adapters_aws::{AwsConfig, EnvError};
use voice_domain::room::MAX_CAPACITY;

use voice_domain::{Capacity, ServiceConfig};

/// Optional: participants per voice room, 1..=10 (default 10, the KVS viewer limit).
pub const VOICE_ROOM_CAPACITY: &str = "VOICE_ROOM_CAPACITY";
/// Environment variable: how long a participant whose connection dropped keeps its place
/// (seconds, 0–600; default `voice_domain::DEFAULT_RECONNECT_GRACE`). The same setting as the
/// self-hosted server's `--reconnect-grace-secs` / `VOICE_RECONNECT_GRACE_SECS`.
pub const VOICE_RECONNECT_GRACE_SECS: &str = "VOICE_RECONNECT_GRACE_SECS";
/// Optional: the S3 bucket recordings are kept in (the template's `RecordingsBucket`). Unset:
/// `startRecording` and `listRecordings` answer `RECORDING_UNAVAILABLE`.
pub const RECORDINGS_BUCKET: &str = "RECORDINGS_BUCKET";
/// The longest reconnect grace accepted: longer, and a dead participant holds a place (and its
/// channel) for longer than a user would wait for them.
pub const MAX_RECONNECT_GRACE_SECS: u64 = 600;
/// Environment variable: how long a voice participant's connection may go without a keepalive
/// (`getVoiceRoom`, every 5 s from the web client while in voice) before it is treated as
/// disconnected, by the others' keepalives or the sweep (seconds: 0 turns the rule off, else
/// 10–600; default `voice_domain::DEFAULT_LIVENESS_TIMEOUT`, 10). API Gateway does not ping
/// clients, so without it a half-open connection stays listed until API Gateway's 10-minute idle
/// close.
pub const VOICE_LIVENESS_TIMEOUT_SECS: &str = "VOICE_LIVENESS_TIMEOUT_SECS";
/// The shortest liveness timeout accepted (other than 0, off): two of the web client's in-voice
/// keepalive periods (5 s, `VOICE_KEEPALIVE_MS` in voice-server/static/config.js). Shorter, and
/// one late keepalive (a Lambda cold start, a slow network) would be taken for a dead
/// connection; such a false alarm heals at the next keepalive (`participantResumed`), but the
/// others' media links to the participant are rebuilt for nothing.
pub const MIN_LIVENESS_TIMEOUT_SECS: u64 = 10;

/// Optional: new users (a `hello` without a usable resume token) per source address per clock
/// hour, builtin chat only (default [`DEFAULT_NEW_USERS_PER_IP_PER_HOUR`]); the self-hosted
/// server's `--max-new-users-per-ip-per-hour`.
pub const MAX_NEW_USERS_PER_IP_PER_HOUR: &str = "MAX_NEW_USERS_PER_IP_PER_HOUR";
/// The default of [`MAX_NEW_USERS_PER_IP_PER_HOUR`], as self-hosted.
pub const DEFAULT_NEW_USERS_PER_IP_PER_HOUR: u32 = 30;

/// What the Lambda needs to build its adapters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaConfig {
    /// The AWS settings (see `docs/aws-adapters.md`).
    pub aws: AwsConfig,
    /// `VOICE_ROOM_CAPACITY`, if set.
    pub capacity: Option<Capacity>,
    /// `VOICE_RECONNECT_GRACE_SECS`, if set.
    pub reconnect_grace: Option<Duration>,
    /// `RECORDINGS_BUCKET`, if set.
    pub recordings_bucket: Option<String>,
    /// Whether S3 is a local stand-in (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` set): then
    /// buckets are addressed path-style (`<endpoint>/<bucket>/<key>`), since
    /// `<bucket>.127.0.0.1` does not resolve.
    pub s3_path_style: bool,
    /// `MAX_NEW_USERS_PER_IP_PER_HOUR` (default [`DEFAULT_NEW_USERS_PER_IP_PER_HOUR`]).
    pub new_users_per_ip_per_hour: u32,
    /// `VOICE_LIVENESS_TIMEOUT_SECS`, if set (`Some(Duration::ZERO)`: off).
    pub liveness_timeout: Option<Duration>,
}

impl LambdaConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`EnvError`] naming every missing or invalid variable.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment in production, a map in tests), by the
    /// rules of [`AwsConfig::from_lookup`].
    ///
    /// # Errors
    /// [`EnvError`] naming every missing or invalid variable, the AWS ones and the Lambda's.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let aws = AwsConfig::from_lookup(&lookup);
        let capacity = match lookup(VOICE_ROOM_CAPACITY).as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u8>()
                .ok()
                .and_then(|n| Capacity::new(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    (
                        VOICE_ROOM_CAPACITY,
                        format!("{v:?} is not a whole number from 1 to {MAX_CAPACITY}"),
                    )
                }),
        };
        let reconnect_grace = match lookup(VOICE_RECONNECT_GRACE_SECS).as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_RECONNECT_GRACE_SECS)
                .map(|n| Some(Duration::from_secs(n)))
                .ok_or_else(|| {
                    (
                        VOICE_RECONNECT_GRACE_SECS,
                        format!(
                            "{v:?} is not a whole number of seconds from 0 to {MAX_RECONNECT_GRACE_SECS}"
                        ),
                    )
                }),
        };
        let set = |name: &str| lookup(name).is_some_and(|v| !v.trim().is_empty());
        // S3 bucket names: 3 to 63 lowercase letters, digits, `.` and `-`
        // (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
        let recordings_bucket = match lookup(RECORDINGS_BUCKET).as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(b)
                if (3..=63).contains(&b.len())
                    && b
                        .bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-') =>
            {
                Ok(Some(b.to_owned()))
            }
            Some(b) => Err((
                RECORDINGS_BUCKET,
                format!("{b:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, `.` or `-`)"),
            )),
        };
        let s3_path_style = set("AWS_ENDPOINT_URL_S3") || set("AWS_ENDPOINT_URL");
        let sign_ups = match lookup(MAX_NEW_USERS_PER_IP_PER_HOUR)
            .as_deref()
            .map(str::trim)
        {
            None | Some("") => Ok(DEFAULT_NEW_USERS_PER_IP_PER_HOUR),
            Some(v) => v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                (
                    MAX_NEW_USERS_PER_IP_PER_HOUR,
                    format!("{v:?} is not a whole number of at least 1"),
                )
            }),
        };
        let liveness_timeout = match lookup(VOICE_LIVENESS_TIMEOUT_SECS).as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n == 0 || (MIN_LIVENESS_TIMEOUT_SECS..=MAX_RECONNECT_GRACE_SECS).contains(n))
                .map(|n| Some(Duration::from_secs(n)))
                .ok_or_else(|| {
                    (
                        VOICE_LIVENESS_TIMEOUT_SECS,
                        format!(
                            "{v:?} is not 0 (off) or a whole number of seconds from {MIN_LIVENESS_TIMEOUT_SECS} to {MAX_RECONNECT_GRACE_SECS}"
                        ),
                    )
                }),
        };
        match (
            aws,
            capacity,
            reconnect_grace,
            recordings_bucket,
            sign_ups,
            liveness_timeout,
        ) {
            (
                Ok(aws),
                Ok(capacity),
                Ok(reconnect_grace),
                Ok(recordings_bucket),
                Ok(new_users_per_ip_per_hour),
                Ok(liveness_timeout),
            ) => Ok(Self {
                aws,
                capacity,
                reconnect_grace,
                recordings_bucket,
                s3_path_style,
                new_users_per_ip_per_hour,
                liveness_timeout,
            }),
            (aws, capacity, reconnect_grace, recordings_bucket, sign_ups, liveness_timeout) => {
                let mut error = aws.err().unwrap_or_default();
                error.invalid.extend(capacity.err());
                error.invalid.extend(reconnect_grace.err());
                error.invalid.extend(recordings_bucket.err());
                error.invalid.extend(sign_ups.err());
                error.invalid.extend(liveness_timeout.err());
                Err(error)
            }
        }
    }

    /// The service tunables this configuration implies (capacity, reconnect grace, the channel
    /// pool's idle eviction, the liveness timeout, on by default here since API Gateway does
    /// not ping clients; the rest default).
    pub fn service_config(&self) -> ServiceConfig {
        let defaults = ServiceConfig::default();
        ServiceConfig {
            capacity: self.capacity.unwrap_or_default(),
            reconnect_grace: self.reconnect_grace.unwrap_or(defaults.reconnect_grace),
            channel_idle_eviction: self
                .aws
                .channel_pool_idle
                .unwrap_or(defaults.channel_idle_eviction),
            liveness_timeout: match self.liveness_timeout {
                None => Some(voice_domain::DEFAULT_LIVENESS_TIMEOUT),
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
            },
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const COMPLETE: &[(&str, &str)] = &[
        ("CONNECTIONS_TABLE", "ChatConnections"),
        ("ROOMS_TABLE", "ChatRooms"),
        ("VOICE_ROOMS_TABLE", "VoiceRooms"),
        ("KVS_ROLE_ARN", "arn:aws:iam::123456789012:role/KvsVoice"),
        ("CHAT_MODE", "existing"),
    ];

    #[test]
    fn the_aws_settings_come_from_the_one_parser_and_capacity_defaults_to_ten() {
        let c = LambdaConfig::from_lookup(lookup(COMPLETE)).unwrap();
        assert_eq!(
            c.aws,
            AwsConfig::from_lookup(lookup(COMPLETE)).unwrap(),
            "the Lambda reads the AWS variables exactly as the adapters do"
        );
        assert_eq!(c.capacity, None);
        assert_eq!(c.service_config().capacity.get(), MAX_CAPACITY);
    }

    #[test]
    fn capacity_is_read_and_bounded() {
        let mut pairs = COMPLETE.to_vec();
        pairs.push((VOICE_ROOM_CAPACITY, " 4 "));
        let c = LambdaConfig::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(c.capacity.map(Capacity::get), Some(4));
        assert_eq!(c.service_config().capacity.get(), 4);
        for bad in ["0", "11", "x", "-1"] {
            let mut p = COMPLETE.to_vec();
            p.push((VOICE_ROOM_CAPACITY, bad));
            let e = LambdaConfig::from_lookup(lookup(&p)).unwrap_err();
            assert_eq!(e.invalid.len(), 1, "{bad}");
            assert!(
                e.to_string().contains("VOICE_ROOM_CAPACITY is invalid"),
                "{e}"
            );
            assert!(e.to_string().contains("1 to 10"), "{e}");
        }
    }

    #[test]
    fn the_reconnect_grace_is_read_bounded_and_defaults_to_the_domains() {
        let c = LambdaConfig::from_lookup(lookup(COMPLETE)).unwrap();
        assert_eq!(
            c.service_config().reconnect_grace,
            voice_domain::DEFAULT_RECONNECT_GRACE
        );
        for (v, secs) in [("0", 0), (" 45 ", 45), ("600", 600)] {
            let mut p = COMPLETE.to_vec();
            p.push((VOICE_RECONNECT_GRACE_SECS, v));
            let c = LambdaConfig::from_lookup(lookup(&p)).unwrap();
            assert_eq!(
                c.service_config().reconnect_grace,
                Duration::from_secs(secs)
            );
        }
        for bad in ["601", "-1", "1.5", "soon"] {
            let mut p = COMPLETE.to_vec();
            p.push((VOICE_RECONNECT_GRACE_SECS, bad));
            let e = LambdaConfig::from_lookup(lookup(&p)).unwrap_err();
            assert!(
                e.to_string()
                    .contains("VOICE_RECONNECT_GRACE_SECS is invalid"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_liveness_timeout_is_on_by_default_bounded_and_0_turns_it_off() {
        let c = LambdaConfig::from_lookup(lookup(COMPLETE)).unwrap();
        assert_eq!(
            c.service_config().liveness_timeout,
            Some(voice_domain::DEFAULT_LIVENESS_TIMEOUT)
        );
        for (v, want) in [
            ("0", None),
            (" 10 ", Some(10)),
            ("30", Some(30)),
            ("600", Some(600)),
        ] {
            let mut p = COMPLETE.to_vec();
            p.push((VOICE_LIVENESS_TIMEOUT_SECS, v));
            let c = LambdaConfig::from_lookup(lookup(&p)).unwrap();
            assert_eq!(
                c.service_config().liveness_timeout,
                want.map(Duration::from_secs),
                "{v}"
            );
        }
        for bad in ["9", "1", "601", "-1", "soon"] {
            let mut p = COMPLETE.to_vec();
            p.push((VOICE_LIVENESS_TIMEOUT_SECS, bad));
            let e = LambdaConfig::from_lookup(lookup(&p)).unwrap_err();
            assert!(
                e.to_string()
                    .contains("VOICE_LIVENESS_TIMEOUT_SECS is invalid"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_bad_capacity_is_reported_with_the_aws_problems() {
        let e = LambdaConfig::from_lookup(lookup(&[
            ("ROOMS_TABLE", "ChatRooms"),
            ("KVS_ROLE_ARN", "KvsVoice"),
            (VOICE_ROOM_CAPACITY, "11"),
            ("CHAT_MODE", "existing"),
        ]))
        .unwrap_err();
        assert_eq!(e.missing, vec!["CONNECTIONS_TABLE", "VOICE_ROOMS_TABLE"]);
        let names: Vec<_> = e.invalid.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec!["KVS_ROLE_ARN", VOICE_ROOM_CAPACITY]);
    }
}
