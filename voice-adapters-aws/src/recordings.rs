//! Recordings in S3: voice-executor's `RecordingFiles` port for the AWS deployment.
//!
//! The recorder's browser uploads straight to S3 (the Lambda never carries audio), as many
//! small objects, so that a recorder whose tab or network dies loses seconds, not a 5 MiB
//! multipart part (~20 min of Opus):
//! - `recordings/<chat>/<id>.json` — the manifest (voice room, recorder, start), written by
//!   [`RecordingFiles::prepare`] when the domain has started the recording;
//! - `recordings/<chat>/<id>.parts/<part>` — each a few seconds of the `MediaRecorder`
//!   stream (`chunks_per_part` 1 s chunks), `PUT` by the recorder through a presigned URL for
//!   exactly that key, minted in batches only after the domain's `recorder_upload` let it;
//! - `recordings/<chat>/<id>.webm` — the one file members download, assembled by
//!   [`RecordingFiles::finish`] (when the recorder says it is done, or on the first listing
//!   after the final-chunk grace) by concatenating the parts in order (a `MediaRecorder`
//!   stream cut into chunks is the concatenation of its chunks) into a multipart upload of
//!   parts of at least 5 MiB, or one `PutObject` when smaller; then the part objects are
//!   deleted.
//!
//! `<chat>` is the chat room id with every byte outside `A-Z a-z 0-9 - _` written `%XX`, so a
//! chat room id (opaque, printable) can never reach another room's prefix. Downloads are
//! presigned `GetObject` URLs for the one `.webm` key, minted per listing for a member the
//! domain let in, valid [`RecordingSettings::url_ttl`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tracing::warn;
use voice_domain::recording::{Recording, RecordingId};
use voice_domain::{ChatRoomId, UserId, VoiceRoom};
use voice_executor::recording::{
    PartUrl, RecordingEntry, RecordingFiles, RecordingFilesError, UploadGrant, UploadUrls,
};

/// S3's smallest multipart part (all but the last), 5 MiB
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html>).
pub const S3_MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// How recordings are kept in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSettings {
    /// How long a presigned URL (upload or download) works: 5 minutes.
    pub url_ttl: Duration,
    /// Part URLs handed out per batch: 24 (two minutes of audio at 5 s a part, ~40 KB of
    /// reply with a Lambda session token in each URL: well under API Gateway's 128 KB).
    pub parts_per_batch: u32,
    /// 1 s chunks per part: 5, so a recorder that dies loses at most ~5 s plus what is in
    /// flight.
    pub chunks_per_part: u32,
    /// Most parts of one recording: 4320 (6 hours at 5 s a part).
    pub max_parts: u32,
    /// Largest assembled file: 512 MiB (parts past it are left out).
    pub max_bytes: u64,
    /// Size of each multipart part written when assembling (at least [`S3_MIN_PART_BYTES`]).
    pub assemble_part_bytes: usize,
    /// Recordings listed per chat room, newest first: 50.
    pub list_limit: usize,
}

impl Default for RecordingSettings {
    fn default() -> Self {
        Self {
            url_ttl: Duration::from_secs(300),
            parts_per_batch: 24,
            chunks_per_part: 5,
            max_parts: 4320,
            max_bytes: 512 * 1024 * 1024,
            assemble_part_bytes: 8 * 1024 * 1024,
            list_limit: 50,
        }
    }
}

/// The manifest stored beside a recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    recording_id: String,
    voice_room_id: String,
    by: String,
    started_at: u64,
}

/// `RecordingFiles` on one S3 bucket (`RECORDINGS_BUCKET`).
#[derive(Debug, Clone)]
pub struct S3Recordings {
    s3: aws_sdk_s3::Client,
    bucket: String,
    settings: RecordingSettings,
}

/// The S3 client as the recordings need it: request checksums only where S3 requires them
/// (a presigned `PutObject` made with the SDK's default "when supported" would carry the CRC of
/// an empty body, and S3 would refuse the browser's real one), and path-style addressing when
/// `path_style` (a local stand-in at `127.0.0.1`, where `<bucket>.127.0.0.1` cannot resolve).
pub fn s3_client(sdk: &SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// `chat_room` as one key segment: bytes outside `A-Z a-z 0-9 - _` as `%XX` (injective, and
/// never `/`, `.` or `..`).
pub fn chat_segment(chat_room: &ChatRoomId) -> String {
    let mut out = String::new();
    for b in chat_room.as_str().bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The key prefix of `chat_room`'s recordings, ending in `/`.
pub fn room_prefix(chat_room: &ChatRoomId) -> String {
    format!("recordings/{}/", chat_segment(chat_room))
}

/// The assembled file's key: `recordings/<chat>/<id>.webm`.
pub fn file_key(chat_room: &ChatRoomId, id: &RecordingId) -> String {
    format!("{}{id}.webm", room_prefix(chat_room))
}

/// Part `part`'s key (zero-padded, so key order is part order).
pub fn part_key(chat_room: &ChatRoomId, id: &RecordingId, part: u32) -> String {
    format!("{}{id}.parts/{part:06}", room_prefix(chat_room))
}

fn manifest_key(chat_room: &ChatRoomId, id: &RecordingId) -> String {
    format!("{}{id}.json", room_prefix(chat_room))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Logs an S3 failure (no user text in it: keys are built from validated ids) and says
/// "unavailable".
fn unavailable(what: &str, e: impl std::error::Error) -> RecordingFilesError {
    let e = aws_smithy_types::error::display::DisplayErrorContext(&e);
    warn!(error = %e, "S3 {what} failed");
    RecordingFilesError::Unavailable
}

impl S3Recordings {
    /// Recordings in `bucket` through `s3` (see [`s3_client`]).
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            s3,
            bucket: bucket.into(),
            settings: RecordingSettings::default(),
        }
    }

    /// The same with other settings (tests: small parts).
    #[must_use]
    pub fn with_settings(mut self, settings: RecordingSettings) -> Self {
        self.settings = settings;
        self
    }

    fn presigning(&self) -> Result<PresigningConfig, RecordingFilesError> {
        PresigningConfig::expires_in(self.settings.url_ttl)
            .map_err(|e| unavailable("presigning config", e))
    }

    async fn part_urls(
        &self,
        chat_room: &ChatRoomId,
        id: &RecordingId,
        from: u32,
    ) -> Result<Vec<PartUrl>, RecordingFilesError> {
        let end = from
            .saturating_add(self.settings.parts_per_batch)
            .min(self.settings.max_parts);
        let mut parts = Vec::new();
        for part in from..end {
            let req = self
                .s3
                .put_object()
                .bucket(&self.bucket)
                .key(part_key(chat_room, id, part))
                .presigned(self.presigning()?)
                .await
                .map_err(|e| unavailable("presign PutObject", e))?;
            parts.push(PartUrl {
                part,
                url: req.uri().to_owned(),
            });
        }
        Ok(parts)
    }

    /// Every part key of a recording, in part order.
    async fn part_keys(
        &self,
        chat_room: &ChatRoomId,
        id: &RecordingId,
    ) -> Result<Vec<(String, u64)>, RecordingFilesError> {
        let prefix = format!("{}{id}.parts/", room_prefix(chat_room));
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable("ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    keys.push((k.to_owned(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn exists(&self, key: &str) -> Result<bool, RecordingFilesError> {
        Ok(self.size_of(key).await?.is_some())
    }

    /// The size of `key`, `None` when there is no such object.
    async fn size_of(&self, key: &str) -> Result<Option<u64>, RecordingFilesError> {
        match self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(unavailable("HeadObject", e)),
        }
    }

    /// The body of `key`, or `None` when it is gone (another finisher deleted it).
    async fn read(&self, key: String) -> Result<Option<Vec<u8>>, RecordingFilesError> {
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let bytes = o
                    .body
                    .collect()
                    .await
                    .map_err(|e| unavailable("GetObject body", e))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(unavailable("GetObject", e)),
        }
    }

    async fn put(
        &self,
        key: String,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(), RecordingFilesError> {
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| unavailable("PutObject", e))?;
        Ok(())
    }

    /// Concatenates `parts` (in order) into `key`. `Ok(false)` when a part vanished midway
    /// (someone else finished first): nothing is written then.
    async fn assemble(&self, key: &str, parts: Vec<String>) -> Result<bool, RecordingFilesError> {
        let mut reads = stream::iter(parts.into_iter().map(|k| self.read(k))).buffered(8);
        let mut buf: Vec<u8> = Vec::new();
        let mut total = 0u64;
        let mut upload: Option<(String, Vec<CompletedPart>)> = None;
        let outcome: Result<bool, RecordingFilesError> = async {
            while let Some(body) = reads.try_next().await? {
                let Some(body) = body else {
                    return Ok(false);
                };
                buf.extend_from_slice(&body);
                total += body.len() as u64;
                if buf.len() >= self.settings.assemble_part_bytes.max(S3_MIN_PART_BYTES) {
                    self.upload_part(key, &mut upload, std::mem::take(&mut buf))
                        .await?;
                }
            }
            Ok(true)
        }
        .await;
        match (outcome, upload) {
            (Ok(true), None) => {
                self.put(key.to_owned(), buf, "audio/webm").await?;
                Ok(true)
            }
            (Ok(true), Some((upload_id, mut done))) => {
                if !buf.is_empty() {
                    let mut u = Some((upload_id.clone(), std::mem::take(&mut done)));
                    self.upload_part(key, &mut u, buf).await?;
                    done = u.map(|(_, d)| d).unwrap_or_default();
                }
                let completed = self
                    .s3
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(done))
                            .build(),
                    )
                    .send()
                    .await;
                match completed {
                    Ok(_) => Ok(true),
                    // A 200 whose body the SDK could not read (moto 5 names its root element
                    // `CompleteMultipartUploadResponse`): done if the object is there, whole.
                    Err(e)
                        if e.raw_response().is_some_and(|r| r.status().as_u16() == 200)
                            && self.size_of(key).await? == Some(total) =>
                    {
                        Ok(true)
                    }
                    Err(e) => Err(unavailable("CompleteMultipartUpload", e)),
                }
            }
            (other, Some((upload_id, _))) => {
                // Nothing half-written stays (the bucket's AbortIncompleteMultipartUpload rule
                // is the backstop if this fails too).
                let _ = self
                    .s3
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await;
                other
            }
            (other, None) => other,
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &mut Option<(String, Vec<CompletedPart>)>,
        body: Vec<u8>,
    ) -> Result<(), RecordingFilesError> {
        if upload.is_none() {
            let created = self
                .s3
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .content_type("audio/webm")
                .send()
                .await
                .map_err(|e| unavailable("CreateMultipartUpload", e))?;
            let id = created.upload_id().ok_or_else(|| {
                warn!("S3 CreateMultipartUpload answered no upload id");
                RecordingFilesError::Unavailable
            })?;
            *upload = Some((id.to_owned(), Vec::new()));
        }
        let Some((id, done)) = upload.as_mut() else {
            return Err(RecordingFilesError::Unavailable);
        };
        let number = i32::try_from(done.len() + 1).map_err(|_| RecordingFilesError::Unavailable)?;
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id.as_str())
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| unavailable("UploadPart", e))?;
        done.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn delete_keys(&self, keys: Vec<String>) -> Result<(), RecordingFilesError> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unavailable("DeleteObjects input", e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| unavailable("DeleteObjects input", e))?;
            self.s3
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| unavailable("DeleteObjects", e))?;
        }
        Ok(())
    }

    async fn manifest(&self, key: String) -> Result<Option<Manifest>, RecordingFilesError> {
        Ok(self
            .read(key)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }
}

#[async_trait]
impl RecordingFiles for S3Recordings {
    async fn prepare(
        &self,
        room: &VoiceRoom,
        recording: &Recording,
    ) -> Result<UploadGrant, RecordingFilesError> {
        let chat = room.chat_room();
        let manifest = Manifest {
            recording_id: recording.id.to_string(),
            voice_room_id: room.id().to_string(),
            by: recording.by.to_string(),
            started_at: recording.started_at.as_millis(),
        };
        let body = serde_json::to_vec(&manifest).map_err(|e| unavailable("manifest", e))?;
        self.put(manifest_key(chat, &recording.id), body, "application/json")
            .await?;
        let parts = self.part_urls(chat, &recording.id, 0).await?;
        Ok(UploadGrant {
            recording_id: recording.id.to_string(),
            upload_url: String::new(),
            upload_token: String::new(),
            parts,
            chunks_per_part: self.settings.chunks_per_part,
            expires_at: now_ms() + self.settings.url_ttl.as_millis() as u64,
            max_bytes: self.settings.max_bytes,
            max_chunk_bytes: self.settings.max_bytes,
        })
    }

    async fn upload_urls(
        &self,
        room: &VoiceRoom,
        recording: &Recording,
        from: u32,
    ) -> Result<UploadUrls, RecordingFilesError> {
        Ok(UploadUrls {
            recording_id: recording.id.to_string(),
            parts: self
                .part_urls(room.chat_room(), &recording.id, from)
                .await?,
            expires_at: now_ms() + self.settings.url_ttl.as_millis() as u64,
        })
    }

    async fn list(
        &self,
        chat_room: &ChatRoomId,
        _viewer: &UserId,
    ) -> Result<Vec<RecordingEntry>, RecordingFilesError> {
        let prefix = room_prefix(chat_room);
        let mut manifests = Vec::new(); // (last modified, key)
        let mut files = std::collections::HashMap::new(); // recording id → size
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable("ListObjectsV2", e))?;
            for o in page.contents() {
                let Some(name) = o.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                if let Some(id) = name.strip_suffix(".json") {
                    let modified = o.last_modified().map_or(0, |t| t.secs());
                    manifests.push((modified, id.to_owned()));
                } else if let Some(id) = name.strip_suffix(".webm") {
                    files.insert(id.to_owned(), o.size().unwrap_or(0).max(0) as u64);
                }
            }
        }
        manifests.sort_by(|a, b| b.cmp(a));
        manifests.truncate(self.settings.list_limit);
        let read = manifests
            .into_iter()
            .map(|(_, id)| self.manifest(format!("{prefix}{id}.json")));
        let manifests: Vec<Option<Manifest>> = stream::iter(read).buffered(8).try_collect().await?;
        let ttl = self.presigning()?;
        let expires = now_ms() + self.settings.url_ttl.as_millis() as u64;
        let mut out = Vec::new();
        for m in manifests.into_iter().flatten() {
            let Ok(id) = RecordingId::parse(&m.recording_id) else {
                continue;
            };
            let mut entry = RecordingEntry {
                recording_id: m.recording_id,
                voice_room_id: m.voice_room_id,
                by: m.by,
                started_at: m.started_at,
                bytes: 0,
                download_url: String::new(),
                download_expires_at: 0,
                preparing: true,
            };
            if let Some(bytes) = files.get(id.as_str()) {
                let req = self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(file_key(chat_room, &id))
                    .response_content_type("audio/webm")
                    .response_content_disposition(format!("attachment; filename=\"{id}.webm\""))
                    .presigned(ttl.clone())
                    .await
                    .map_err(|e| unavailable("presign GetObject", e))?;
                entry.bytes = *bytes;
                entry.download_url = req.uri().to_owned();
                entry.download_expires_at = expires;
                entry.preparing = false;
            }
            out.push(entry);
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.started_at));
        Ok(out)
    }

    async fn finish(
        &self,
        chat_room: &ChatRoomId,
        recording: &RecordingId,
    ) -> Result<(), RecordingFilesError> {
        let key = file_key(chat_room, recording);
        if self.exists(&key).await? {
            return Ok(());
        }
        let mut parts = Vec::new();
        let mut total = 0u64;
        for (k, size) in self.part_keys(chat_room, recording).await? {
            if total + size > self.settings.max_bytes {
                warn!(recording = %recording, "recording past its size cap: later parts left out");
                break;
            }
            total += size;
            parts.push(k);
        }
        if parts.is_empty() && self.exists(&key).await? {
            return Ok(());
        }
        if !self.assemble(&key, parts).await? {
            return Ok(());
        }
        // Every part, including any past the cap.
        let all = self
            .part_keys(chat_room, recording)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.delete_keys(all).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_room_id_is_one_key_segment_that_cannot_escape_its_prefix() {
        let plain = ChatRoomId::parse("room-1_A").unwrap();
        assert_eq!(chat_segment(&plain), "room-1_A");
        for hostile in ["../x", "a/b", "..", ".", "a%2Fb", "é"] {
            let seg = chat_segment(&ChatRoomId::parse(hostile).unwrap());
            assert!(
                !seg.contains('/') && !seg.contains('.'),
                "{hostile} → {seg}"
            );
        }
        // Injective: `%` itself is encoded.
        assert_ne!(
            chat_segment(&ChatRoomId::parse("a/b").unwrap()),
            chat_segment(&ChatRoomId::parse("a%2Fb").unwrap())
        );
        let id = RecordingId::parse("rec-1").unwrap();
        assert_eq!(file_key(&plain, &id), "recordings/room-1_A/rec-1.webm");
        assert_eq!(
            part_key(&plain, &id, 7),
            "recordings/room-1_A/rec-1.parts/000007"
        );
    }

    #[test]
    fn a_batch_of_part_urls_fits_an_api_gateway_reply() {
        // A presigned PUT with a Lambda session token is ~1.5 KB; the reply limit is 128 KB.
        let s = RecordingSettings::default();
        assert!(u64::from(s.parts_per_batch) * 1600 < 100 * 1024);
        assert!(s.assemble_part_bytes >= S3_MIN_PART_BYTES);
    }
}
