//! Where recordings are stored is the deployment's: the self-hosted server keeps files under its
//! data dir, AWS would keep S3 objects. The rules (who may start, stop and download) are the
//! voice domain's; this port only hands out where to upload and lists what is stored, each
//! entry with a download link minted for the one user asking.

use async_trait::async_trait;
use serde::Serialize;
use voice_domain::errors::ErrorClass;
use voice_domain::protocol::WireError;
use voice_domain::recording::{Recording, RecordingId};
use voice_domain::{ChatRoomId, UserId, VoiceRoom};

/// Where and how the recorder uploads one recording: one endpoint and a token (the self-hosted
/// server), or a first batch of per-part URLs (S3), more through `recordingUploadUrls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadGrant {
    /// The recording.
    pub recording_id: String,
    /// Where each chunk is `POST`ed (same origin on the self-hosted server); empty with `parts`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub upload_url: String,
    /// `Authorization: Bearer` value, scoped to this one recording; empty with `parts`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub upload_token: String,
    /// Per-part upload URLs (S3: each a presigned `PUT` of exactly one object); empty on the
    /// self-hosted server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartUrl>,
    /// How many 1 s chunks the recorder puts in one part (0: not part-based): the most a
    /// recorder that dies loses, beside what is in flight.
    #[serde(skip_serializing_if = "is_zero")]
    pub chunks_per_part: u32,
    /// When the token stops working, ms since epoch.
    pub expires_at: u64,
    /// Largest file, in bytes: chunks past it are refused.
    pub max_bytes: u64,
    /// Largest chunk, in bytes.
    pub max_chunk_bytes: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// One part's upload URL: the recorder `PUT`s part `part` (numbered from 0, in recording order)
/// there, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartUrl {
    /// The part's number.
    pub part: u32,
    /// Where to `PUT` it.
    pub url: String,
}

/// A further batch of part URLs (`recordingUploadUrls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadUrls {
    /// The recording.
    pub recording_id: String,
    /// The URLs, in part order.
    pub parts: Vec<PartUrl>,
    /// When they stop working, ms since epoch.
    pub expires_at: u64,
}

/// One stored recording, as a member of its chat room sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingEntry {
    /// The recording.
    pub recording_id: String,
    /// Its voice room.
    pub voice_room_id: String,
    /// Who recorded it.
    pub by: String,
    /// When it started, ms since epoch.
    pub started_at: u64,
    /// Its size so far, in bytes.
    pub bytes: u64,
    /// A link for the asking user only, short-lived; empty while `preparing`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub download_url: String,
    /// When the link stops working, ms since epoch; 0 while `preparing`.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub download_expires_at: u64,
    /// The file is not assembled yet (S3: its parts are still separate objects until the
    /// recorder finishes or the final-chunk grace has passed); no link yet.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub preparing: bool,
}

/// Why the storage could not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingFilesError {
    /// This deployment does not store recordings (yet).
    #[error("recording is not available on this server")]
    Disabled,
    /// The storage failed; try again.
    #[error("the recording storage is unavailable; try again in a moment")]
    Unavailable,
}

impl RecordingFilesError {
    /// The stable wire code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Disabled => "RECORDING_UNAVAILABLE",
            Self::Unavailable => "UNAVAILABLE",
        }
    }

    /// The class an entrypoint maps to a status.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Disabled => ErrorClass::Conflict,
            Self::Unavailable => ErrorClass::Unavailable,
        }
    }
}

impl From<RecordingFilesError> for WireError {
    fn from(e: RecordingFilesError) -> Self {
        Self {
            code: e.code().into(),
            message: e.to_string(),
            retryable: matches!(e, RecordingFilesError::Unavailable),
        }
    }
}

/// A deployment's recording storage.
#[async_trait]
pub trait RecordingFiles: Send + Sync {
    /// Prepares storage for `recording` of `room` (just started by the domain) and says where
    /// its recorder uploads.
    ///
    /// # Errors
    /// [`RecordingFilesError`]; the executor then stops the recording again.
    async fn prepare(
        &self,
        room: &VoiceRoom,
        recording: &Recording,
    ) -> Result<UploadGrant, RecordingFilesError>;

    /// The recordings of `chat_room`, newest first, with download links for `viewer` (whom the
    /// domain has let in).
    ///
    /// # Errors
    /// [`RecordingFilesError`].
    async fn list(
        &self,
        chat_room: &ChatRoomId,
        viewer: &UserId,
    ) -> Result<Vec<RecordingEntry>, RecordingFilesError>;

    /// Upload URLs for parts `from..` of `recording` of `room`, whose recorder the domain has
    /// just let upload (`VoiceService::recorder_upload`). Storages with one upload endpoint
    /// (the self-hosted server) do not hand out per-part URLs.
    ///
    /// # Errors
    /// [`RecordingFilesError`]; [`RecordingFilesError::Disabled`] by default.
    async fn upload_urls(
        &self,
        room: &VoiceRoom,
        recording: &Recording,
        from: u32,
    ) -> Result<UploadUrls, RecordingFilesError> {
        let _ = (room, recording, from);
        Err(RecordingFilesError::Disabled)
    }

    /// Makes the one downloadable file of `recording` of `chat_room` from what was uploaded,
    /// once the domain takes no more uploads for it (or its recorder said it is done).
    /// Idempotent. Storages that append as chunks arrive have nothing to do.
    ///
    /// # Errors
    /// [`RecordingFilesError`].
    async fn finish(
        &self,
        chat_room: &ChatRoomId,
        recording: &RecordingId,
    ) -> Result<(), RecordingFilesError> {
        let _ = (chat_room, recording);
        Ok(())
    }
}
