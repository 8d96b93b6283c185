//! The Lambda's configuration, read once at cold start from the original's environment
//! variables.
//!
//! The AWS settings (tables, role, region, management endpoint, stack id) are parsed by
//! `voice-adapters-aws`'s one parser, [`AwsConfig::from_lookup`]; this module adds only what is
//! the Lambda's own (the voice room capacity) and reports its problems in the same error, so
//! that every missing or invalid variable is named at once.

use voice_adapters_aws::{AwsConfig, EnvError};
use voice_domain::room::MAX_CAPACITY;
use voice_domain::{Capacity, ServiceConfig};

/// Optional: participants per voice room, 1..=10 (default 10, the KVS viewer limit).
pub const VOICE_ROOM_CAPACITY: &str = "VOICE_ROOM_CAPACITY";

/// What the Lambda needs to build its adapters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaConfig {
    /// The AWS settings (see `docs/aws-adapters.md`).
    pub aws: AwsConfig,
    /// `VOICE_ROOM_CAPACITY`, if set.
    pub capacity: Option<Capacity>,
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
        match (aws, capacity) {
            (Ok(aws), Ok(capacity)) => Ok(Self { aws, capacity }),
            (aws, capacity) => {
                let mut error = aws.err().unwrap_or_default();
                error.invalid.extend(capacity.err());
                Err(error)
            }
        }
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
