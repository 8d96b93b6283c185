//! The Lambda's configuration, read once at cold start from the original's environment variables.
//!
//! Why a function of a lookup closure instead of `std::env` directly: the check must be testable
//! without mutating the process environment (tests run in parallel), and it must report every
//! missing or invalid variable at once, so that an operator fixes the function configuration in
//! one deploy instead of one variable per failed cold start.

use std::fmt;

use voice_domain::room::MAX_CAPACITY;
use voice_domain::{Capacity, ServiceConfig};

/// Chat app table: WebSocket `connectionId` → user (the original's `ChatConnections`).
pub const CONNECTIONS_TABLE: &str = "CONNECTIONS_TABLE";
/// Chat app table: rooms, admins, join requests, members (the original's `ChatRooms`).
pub const ROOMS_TABLE: &str = "ROOMS_TABLE";
/// Voice table (the original's `VoiceRooms`, partition key `voiceRoomId`).
pub const VOICE_ROOMS_TABLE: &str = "VOICE_ROOMS_TABLE";
/// The role the Lambda assumes (with a session policy) to mint scoped KVS credentials.
pub const KVS_ROLE_ARN: &str = "KVS_ROLE_ARN";
/// Region of the tables and channels; the Lambda runtime always sets it.
pub const AWS_REGION: &str = "AWS_REGION";
/// Optional: participants per voice room, 1..=10 (default 10, the KVS viewer limit).
pub const VOICE_ROOM_CAPACITY: &str = "VOICE_ROOM_CAPACITY";
/// Optional: the API Gateway management endpoint events are posted to
/// (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`). When unset it is derived
/// from each event's `requestContext` as `https://{domainName}/{stage}`; set it when the API is
/// reached through a custom domain, and so that the scheduled sweep can notify on a cold instance.
pub const APIGW_MANAGEMENT_ENDPOINT: &str = "APIGW_MANAGEMENT_ENDPOINT";
/// Optional but set by the template: this deployment's id, put on every channel it creates
/// (tag `voiceStack`), so that the sweep deletes only this stack's channels, never another
/// application's or another stack's `voice-*` channels (the Delete permission carries the same
/// condition). Letters, digits and `_.:/=+-@` only, at most 256 characters (a KVS tag value).
pub const VOICE_STACK_ID: &str = "VOICE_STACK_ID";

/// The region when `AWS_REGION` is unset (the original's default).
pub const DEFAULT_REGION: &str = "us-east-1";

/// Every variable this function reads, required ones first: for docs and error messages.
pub const ALL_VARIABLES: &[&str] = &[
    CONNECTIONS_TABLE,
    ROOMS_TABLE,
    VOICE_ROOMS_TABLE,
    KVS_ROLE_ARN,
    AWS_REGION,
    VOICE_ROOM_CAPACITY,
    APIGW_MANAGEMENT_ENDPOINT,
    VOICE_STACK_ID,
];

/// What the Lambda needs to build its adapters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaConfig {
    /// `CONNECTIONS_TABLE`.
    pub connections_table: String,
    /// `ROOMS_TABLE`.
    pub rooms_table: String,
    /// `VOICE_ROOMS_TABLE`.
    pub voice_rooms_table: String,
    /// `KVS_ROLE_ARN`.
    pub kvs_role_arn: String,
    /// `AWS_REGION`, default `us-east-1`.
    pub region: String,
    /// `VOICE_ROOM_CAPACITY`, if set.
    pub capacity: Option<Capacity>,
    /// `APIGW_MANAGEMENT_ENDPOINT`, if set (otherwise derived per event).
    pub management_endpoint: Option<String>,
    /// `VOICE_STACK_ID`, if set.
    pub stack_id: Option<String>,
}

/// The configuration is incomplete or wrong. Lists every problem, so one fix suffices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Required variables that are unset or empty.
    pub missing: Vec<&'static str>,
    /// Variables that are set to something unusable: (name, why).
    pub invalid: Vec<(&'static str, String)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("voice-lambda configuration is incomplete:")?;
        if !self.missing.is_empty() {
            write!(
                f,
                " missing environment variable(s) {}",
                self.missing.join(", ")
            )?;
        }
        for (i, (name, why)) in self.invalid.iter().enumerate() {
            let sep = if i == 0 && self.missing.is_empty() {
                " "
            } else {
                "; "
            };
            write!(f, "{sep}{name} is invalid: {why}")?;
        }
        write!(
            f,
            ". Set them on the function (see docs/lambda.md); expected: {}",
            ALL_VARIABLES.join(", ")
        )
    }
}

impl LambdaConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming every missing or invalid variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup` (the environment in production, a map in tests). Empty
    /// and whitespace-only values count as unset.
    ///
    /// # Errors
    /// [`ConfigError`] naming every missing or invalid variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut missing = Vec::new();
        let mut invalid = Vec::new();
        let mut required = |name: &'static str| {
            get(name).unwrap_or_else(|| {
                missing.push(name);
                String::new()
            })
        };
        let connections_table = required(CONNECTIONS_TABLE);
        let rooms_table = required(ROOMS_TABLE);
        let voice_rooms_table = required(VOICE_ROOMS_TABLE);
        let kvs_role_arn = required(KVS_ROLE_ARN);
        if !kvs_role_arn.is_empty() && !kvs_role_arn.starts_with("arn:") {
            invalid.push((
                KVS_ROLE_ARN,
                format!("{kvs_role_arn:?} is not an ARN (arn:aws:iam::<account>:role/<name>)"),
            ));
        }
        let region = get(AWS_REGION).unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let capacity = match get(VOICE_ROOM_CAPACITY) {
            None => None,
            Some(v) => match v.parse::<u8>().ok().and_then(|n| Capacity::new(n).ok()) {
                Some(c) => Some(c),
                None => {
                    invalid.push((
                        VOICE_ROOM_CAPACITY,
                        format!("{v:?} is not a whole number from 1 to {MAX_CAPACITY}"),
                    ));
                    None
                }
            },
        };
        let management_endpoint = get(APIGW_MANAGEMENT_ENDPOINT);
        if let Some(e) = &management_endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                invalid.push((
                    APIGW_MANAGEMENT_ENDPOINT,
                    format!("{e:?} is not a URL (https://{{api-id}}.execute-api.{{region}}.amazonaws.com/{{stage}})"),
                ));
            }
        }
        let stack_id = get(VOICE_STACK_ID);
        if let Some(id) = &stack_id {
            let ok = id.len() <= 256
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:/=+-@".contains(&b));
            if !ok {
                invalid.push((
                    VOICE_STACK_ID,
                    "must be at most 256 letters, digits or _.:/=+-@ (a KVS tag value)".to_owned(),
                ));
            }
        }
        if !missing.is_empty() || !invalid.is_empty() {
            return Err(ConfigError { missing, invalid });
        }
        Ok(Self {
            connections_table,
            rooms_table,
            voice_rooms_table,
            kvs_role_arn,
            region,
            capacity,
            management_endpoint: management_endpoint.map(|e| e.trim_end_matches('/').to_owned()),
            stack_id,
        })
    }

    /// The service tunables this configuration implies (capacity; the rest default).
    pub fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            capacity: self.capacity.unwrap_or_default(),
            ..ServiceConfig::default()
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
        (CONNECTIONS_TABLE, "ChatConnections"),
        (ROOMS_TABLE, "ChatRooms"),
        (VOICE_ROOMS_TABLE, "VoiceRooms"),
        (KVS_ROLE_ARN, "arn:aws:iam::123456789012:role/KvsVoice"),
    ];

    #[test]
    fn the_originals_variables_suffice_and_region_defaults_to_us_east_1() {
        let c = LambdaConfig::from_lookup(lookup(COMPLETE)).unwrap();
        assert_eq!(c.connections_table, "ChatConnections");
        assert_eq!(c.rooms_table, "ChatRooms");
        assert_eq!(c.voice_rooms_table, "VoiceRooms");
        assert_eq!(c.kvs_role_arn, "arn:aws:iam::123456789012:role/KvsVoice");
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.capacity, None);
        assert_eq!(c.management_endpoint, None);
        assert_eq!(c.service_config().capacity.get(), MAX_CAPACITY);
    }

    #[test]
    fn optional_variables_are_read() {
        let mut pairs = COMPLETE.to_vec();
        pairs.extend([
            (AWS_REGION, "eu-west-1"),
            (VOICE_ROOM_CAPACITY, "4"),
            (
                APIGW_MANAGEMENT_ENDPOINT,
                "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
            ),
        ]);
        let c = LambdaConfig::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.capacity.map(Capacity::get), Some(4));
        assert_eq!(c.service_config().capacity.get(), 4);
        assert_eq!(
            c.management_endpoint.as_deref(),
            Some("https://abc.execute-api.eu-west-1.amazonaws.com/prod")
        );
    }

    #[test]
    fn one_error_names_every_missing_variable() {
        let e = LambdaConfig::from_lookup(lookup(&[(ROOMS_TABLE, "ChatRooms")])).unwrap_err();
        assert_eq!(
            e.missing,
            vec![CONNECTIONS_TABLE, VOICE_ROOMS_TABLE, KVS_ROLE_ARN]
        );
        let msg = e.to_string();
        for name in [CONNECTIONS_TABLE, VOICE_ROOMS_TABLE, KVS_ROLE_ARN] {
            assert!(msg.contains(name), "{msg}");
        }
        assert!(!msg.contains("ROOMS_TABLE is"), "{msg}");
        assert!(msg.contains("docs/lambda.md"), "{msg}");
    }

    #[test]
    fn empty_values_count_as_missing() {
        let mut pairs = COMPLETE.to_vec();
        pairs.retain(|(k, _)| *k != VOICE_ROOMS_TABLE);
        pairs.push((VOICE_ROOMS_TABLE, "  "));
        let e = LambdaConfig::from_lookup(lookup(&pairs)).unwrap_err();
        assert_eq!(e.missing, vec![VOICE_ROOMS_TABLE]);
    }

    #[test]
    fn invalid_values_are_reported_together_with_missing_ones() {
        let pairs = [
            (CONNECTIONS_TABLE, "ChatConnections"),
            (ROOMS_TABLE, "ChatRooms"),
            (KVS_ROLE_ARN, "KvsVoice"),
            (VOICE_ROOM_CAPACITY, "11"),
            (APIGW_MANAGEMENT_ENDPOINT, "abc.execute-api"),
        ];
        let e = LambdaConfig::from_lookup(lookup(&pairs)).unwrap_err();
        assert_eq!(e.missing, vec![VOICE_ROOMS_TABLE]);
        let names: Vec<_> = e.invalid.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            vec![KVS_ROLE_ARN, VOICE_ROOM_CAPACITY, APIGW_MANAGEMENT_ENDPOINT]
        );
        let msg = e.to_string();
        assert!(msg.contains("VOICE_ROOMS_TABLE"), "{msg}");
        assert!(msg.contains("VOICE_ROOM_CAPACITY is invalid"), "{msg}");
        assert!(msg.contains("1 to 10"), "{msg}");
        for zero in ["0", "x", "-1"] {
            let mut p = COMPLETE.to_vec();
            p.push((VOICE_ROOM_CAPACITY, zero));
            assert!(LambdaConfig::from_lookup(lookup(&p)).is_err(), "{zero}");
        }
    }
}
