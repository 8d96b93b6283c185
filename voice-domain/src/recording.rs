//! Recording with consent: the state a voice room keeps while it is recorded, and the rules of
//! who may start, stop and download a recording.
//!
//! The recording itself is made in the recorder's browser (it hears every participant already);
//! the domain only decides who may record, tells every member of the chat room, stops the
//! recording when its recorder leaves or drops or the room ends, and says until when a storage
//! adapter may take the recorder's uploads. Where bytes go is the deployment's business.
//!
//! Rules, in one place:
//! - only the voice room's master or the chat room's admin may start one, and only as a
//!   connected participant of the room (the browser that records must be in the mesh);
//! - one recording at a time per voice room;
//! - the master, the chat room's admin and the recorder may stop it;
//! - it stops by itself when the recorder leaves, its connection drops, it resumes from another
//!   connection, or the room ends — a recording never outlives the browser making it;
//! - the room's state says "recording" to everyone, so a joiner is told before its audio is
//!   captured (the join grant carries the room view);
//! - uploads for a recording are taken while it runs and for [`FINAL_CHUNK_GRACE`] after it
//!   stopped (the browser's last chunk);
//! - a recording may be downloaded only by the admin or an approved member of its chat room,
//!   checked when the link is handed out and again when it is used
//!   ([`crate::gate::may_download`], the approved-member gate).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{IdError, UserId};
use crate::time::Timestamp;

/// How long after a recording stopped its recorder may still upload (the `MediaRecorder`'s
/// final chunk, and chunks queued behind a slow upload).
pub const FINAL_CHUNK_GRACE: Duration = Duration::from_secs(30);

/// Longest [`RecordingId`].
pub const MAX_RECORDING_ID_CHARS: usize = 100;

/// A recording's id: 1 to [`MAX_RECORDING_ID_CHARS`] ASCII letters, digits, `-` and `_`, so it
/// is safe as a file name and an S3 key without escaping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordingId(String);

impl RecordingId {
    /// Validates `s`.
    ///
    /// # Errors
    /// [`IdError`] naming the rule.
    pub fn parse(s: impl AsRef<str>) -> Result<Self, IdError> {
        let s = s.as_ref();
        let kind = "recording id";
        if s.is_empty() {
            return Err(IdError::Empty { kind });
        }
        if s.len() > MAX_RECORDING_ID_CHARS {
            return Err(IdError::TooLong {
                kind,
                max: MAX_RECORDING_ID_CHARS,
                len: s.chars().count(),
            });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(IdError::BadCharacter {
                kind,
                rule: "ASCII letters, digits, - and _ only",
            });
        }
        Ok(Self(s.to_owned()))
    }

    /// `rec-` and `unique` with every character outside the alphabet replaced by `-`, cut to
    /// the maximum length: for id generators.
    pub fn from_unique(unique: &str) -> Self {
        let mut s: String = "rec-".chars().chain(unique.chars()).collect();
        s = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_RECORDING_ID_CHARS)
            .collect();
        Self(s)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RecordingId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<RecordingId> for String {
    fn from(id: RecordingId) -> String {
        id.0
    }
}

/// Why a recording stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RecordingStopReason {
    /// The master, the chat admin or the recorder stopped it.
    Stopped {
        /// Who.
        by: UserId,
    },
    /// The recorder left the voice room.
    RecorderLeft,
    /// The recorder's connection dropped (or it resumed from another one): its browser can no
    /// longer be trusted to be recording.
    RecorderDisconnected,
    /// The voice room ended.
    RoomEnded,
}

/// When and why a recording stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStop {
    /// When.
    pub at: Timestamp,
    /// Why.
    pub reason: RecordingStopReason,
}

/// A voice room's recording: running (`stopped` is `None`) or the last one, stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    /// Its id (names the file).
    pub id: RecordingId,
    /// Who records it (in whose browser it is made).
    pub by: UserId,
    /// Since when.
    pub started_at: Timestamp,
    /// Set once it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<RecordingStop>,
}

impl Recording {
    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        self.stopped.is_none()
    }

    /// Whether the recorder may still upload to it at `now`: while it runs, and for
    /// [`FINAL_CHUNK_GRACE`] after it stopped.
    pub fn accepts_upload(&self, now: Timestamp) -> bool {
        match &self.stopped {
            None => true,
            Some(stop) => now.since(stop.at) < FINAL_CHUNK_GRACE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_ids_are_file_name_safe() {
        assert!(RecordingId::parse("rec-1a2B_c").is_ok());
        for bad in ["", "../x", "a/b", "a b", "é", &"x".repeat(101)] {
            assert!(RecordingId::parse(bad).is_err(), "{bad:?}");
        }
        let id = RecordingId::from_unique("4f/..\\ü");
        assert!(RecordingId::parse(id.as_str()).is_ok(), "{id}");
        assert!(id.as_str().starts_with("rec-"));
        assert!(RecordingId::from_unique(&"u".repeat(300)).as_str().len() <= 100);
    }

    #[test]
    fn uploads_are_taken_while_running_and_for_the_final_chunk_grace() {
        let mut r = Recording {
            id: RecordingId::parse("rec-1").unwrap(),
            by: UserId::parse("a").unwrap(),
            started_at: Timestamp::from_millis(1_000),
            stopped: None,
        };
        assert!(r.accepts_upload(Timestamp::from_millis(10_000_000)));
        r.stopped = Some(RecordingStop {
            at: Timestamp::from_millis(5_000),
            reason: RecordingStopReason::RoomEnded,
        });
        assert!(r.accepts_upload(Timestamp::from_millis(34_999)));
        assert!(!r.accepts_upload(Timestamp::from_millis(35_000)));
    }
}
