//! Where recordings are stored is the deployment's: the self-hosted server keeps files under its
//! data dir, AWS would keep S3 objects. The rules (who may start, stop and download) are the
//! voice domain's; this port only hands out where to upload and lists what is stored, each
//! entry with a download link minted for the one user asking.

use async_trait::async_trait;
use serde::Serialize;
use voice_domain::errors::ErrorClass;
use voice_domain::protocol::WireError;
use voice_domain::recording::Recording;
use voice_domain::{ChatRoomId, UserId, VoiceRoom};

/// Where and how the recorder uploads one recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadGrant {
    /// The recording.
    pub recording_id: String,
    /// Where each chunk is `POST`ed (same origin on the self-hosted server).
    pub upload_url: String,
    /// `Authorization: Bearer` value, scoped to this one recording.
    pub upload_token: String,
    /// When the token stops working, ms since epoch.
    pub expires_at: u64,
    /// Largest file, in bytes: chunks past it are refused.
    pub max_bytes: u64,
    /// Largest chunk, in bytes.
    pub max_chunk_bytes: u64,
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
    /// A link for the asking user only, short-lived.
    pub download_url: String,
    /// When the link stops working, ms since epoch.
    pub download_expires_at: u64,
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
}
