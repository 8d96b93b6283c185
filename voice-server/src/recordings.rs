//! Recordings on the self-hosted server: files under `<data-dir>/recordings/` (directory 0700,
//! files 0600), uploaded in chunks by the recorder's browser and downloaded through links that
//! are good for one recording, one user and a few minutes.
//!
//! - `<id>.webm` — the bytes, appended chunk by chunk in order (`MediaRecorder` output is one
//!   WebM stream, so the concatenation is the file);
//! - `<id>.json` — who, where, when, how many bytes and chunks so far.
//!
//! Tokens: `base64url(claims JSON) "." base64url(HMAC-SHA256(key, "recording:" + first part))`
//! under the server's token key. The `recording:` prefix keeps them from ever verifying as a
//! voice or resume token (and those from verifying here). An upload token names the recording
//! and its voice room, and is taken only while the domain says the recording accepts uploads
//! (it runs, or stopped less than 30 s ago), so a token outliving its recording uploads
//! nothing. A download token names the recording and the user it was minted for; the user's
//! membership is checked again when it is used.
//!
//! Every refusal is a JSON `{code, message}` with a 4xx/5xx status and one log line; nothing a
//! client sends can panic a handler.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};
use voice_adapters_std::{HmacKey, SystemClock};
use voice_domain::errors::{RecordingAccessError, RecordingUploadError, UseCaseError};
use voice_domain::ports::Clock as _;
use voice_domain::recording::{Recording, RecordingId};
use voice_domain::{ChatRoomId, Timestamp, UserId, VoiceRoom, VoiceRoomId, VoiceService};
use voice_executor::{RecordingEntry, RecordingFiles, RecordingFilesError, UploadGrant};

use crate::adapters::ports::ServerPorts;

/// Limits on recordings, each stopping one abuse (SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingLimits {
    /// Largest recording file: chunks past it are refused (`RECORDING_TOO_LARGE`).
    pub max_bytes: u64,
    /// Largest chunk (one HTTP body).
    pub max_chunk_bytes: usize,
    /// Recordings older than this are deleted.
    pub retention: Duration,
    /// How long an upload token is good (the domain closes uploads sooner when the recording
    /// stops).
    pub upload_ttl: Duration,
    /// How long a download link is good.
    pub download_ttl: Duration,
    /// How long one chunk's body may take to arrive.
    pub chunk_timeout: Duration,
}

impl Default for RecordingLimits {
    fn default() -> Self {
        Self {
            // ~7 h of Opus at 64 kbit/s.
            max_bytes: 200 * 1024 * 1024,
            max_chunk_bytes: 1024 * 1024,
            retention: Duration::from_secs(30 * 24 * 3600),
            upload_ttl: Duration::from_secs(6 * 3600),
            download_ttl: Duration::from_secs(300),
            chunk_timeout: Duration::from_secs(30),
        }
    }
}

/// What a recording token says; trusted only after [`RecordingStore::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// `up` (upload) or `dl` (download).
    pub p: String,
    /// The recording.
    pub rid: String,
    /// Its voice room (upload tokens).
    #[serde(default)]
    pub vr: String,
    /// The user it was minted for.
    pub u: String,
    /// Expiry, ms since epoch.
    pub exp: u64,
}

/// A recording's side file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    /// The recording.
    pub recording_id: String,
    /// Its chat room.
    pub chat_room_id: String,
    /// Its voice room.
    pub voice_room_id: String,
    /// Who records it.
    pub by: String,
    /// When it started, ms since epoch.
    pub started_at: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Chunks stored (the next chunk's sequence number).
    pub chunks: u64,
}

struct Inner {
    dir: PathBuf,
    key: HmacKey,
    limits: RecordingLimits,
    /// One writer at a time: appends and side-file rewrites stay in order. Recording uploads
    /// are a chunk a second per recording; a single lock is no bottleneck.
    write: tokio::sync::Mutex<()>,
}

/// The recordings directory. Cheap to clone.
#[derive(Clone)]
pub struct RecordingStore {
    inner: Arc<Inner>,
}

/// Why a recording request was refused: a status, a code and plain words.
#[derive(Debug)]
pub struct HttpRefusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpRefusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "this link or upload token is invalid or has expired; ask for a new one",
        )
    }

    fn io(e: &std::io::Error) -> Self {
        warn!(error = %e, "recording storage failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the recording storage is unavailable; try again in a moment",
        )
    }

    fn use_case(e: &impl UseCaseError) -> Self {
        let status = match e.class() {
            voice_domain::errors::ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
            voice_domain::errors::ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
            voice_domain::errors::ErrorClass::Forbidden => StatusCode::FORBIDDEN,
            voice_domain::errors::ErrorClass::NotFound => StatusCode::NOT_FOUND,
            voice_domain::errors::ErrorClass::Conflict => StatusCode::CONFLICT,
            voice_domain::errors::ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            voice_domain::errors::ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for HttpRefusal {
    fn into_response(self) -> Response {
        info!(
            status = self.status.as_u16(),
            code = self.code,
            "recording request refused"
        );
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // An existing directory is made private too: recordings are people's voices.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn private_options() -> std::fs::OpenOptions {
    #[allow(unused_mut)]
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

impl RecordingStore {
    /// Opens (creates, mode 0700) the recordings directory `dir`, signing with `key`.
    ///
    /// # Errors
    /// The directory cannot be created or made private.
    pub fn open(dir: PathBuf, key: HmacKey, limits: RecordingLimits) -> std::io::Result<Self> {
        create_private_dir(&dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                key,
                limits,
                write: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> RecordingLimits {
        self.inner.limits
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn file(&self, id: &RecordingId) -> PathBuf {
        self.inner.dir.join(format!("{id}.webm"))
    }

    fn meta_file(&self, id: &RecordingId) -> PathBuf {
        self.inner.dir.join(format!("{id}.json"))
    }

    /// Signs `claims` into a token.
    pub fn sign(&self, claims: &TokenClaims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.inner.key.mac();
        mac.update(b"recording:");
        mac.update(payload.as_bytes());
        format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// Checks a token's signature (constant time), purpose, recording and expiry.
    ///
    /// # Errors
    /// `UNAUTHORIZED`, whatever is wrong (the reason is logged).
    pub fn verify(
        &self,
        token: &str,
        purpose: &str,
        recording: &RecordingId,
        now: Timestamp,
    ) -> Result<TokenClaims, HttpRefusal> {
        let refuse = |why: &str| {
            info!(reason = why, "recording token refused");
            HttpRefusal::unauthorized()
        };
        let (payload, sig) = token.split_once('.').ok_or_else(|| refuse("malformed"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| refuse("malformed"))?;
        let mut mac = self.inner.key.mac();
        mac.update(b"recording:");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| refuse("bad signature"))?;
        let claims: TokenClaims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|j| serde_json::from_slice(&j).ok())
            .ok_or_else(|| refuse("malformed claims"))?;
        if claims.p != purpose || claims.rid != recording.as_str() {
            return Err(refuse("for another purpose or recording"));
        }
        if now.as_millis() >= claims.exp {
            return Err(refuse("expired"));
        }
        Ok(claims)
    }

    async fn read_meta(&self, id: &RecordingId) -> std::io::Result<Option<Meta>> {
        let path = self.meta_file(id);
        blocking(move || match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn write_meta(&self, meta: &Meta) -> std::io::Result<()> {
        let id = RecordingId::parse(&meta.recording_id).map_err(std::io::Error::other)?;
        let path = self.meta_file(&id);
        let bytes = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
        blocking(move || write_private(&path, &bytes)).await
    }

    fn expired(&self, meta: &Meta, now: Timestamp) -> bool {
        now.as_millis().saturating_sub(meta.started_at)
            >= self.inner.limits.retention.as_millis() as u64
    }

    /// Deletes the recordings older than the retention. Returns how many.
    pub async fn prune(&self, now: Timestamp) -> usize {
        let _w = self.inner.write.lock().await;
        let metas = match self.all_metas().await {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "could not list recordings to prune");
                return 0;
            }
        };
        let mut n = 0;
        for meta in metas.into_iter().filter(|m| self.expired(m, now)) {
            let Ok(id) = RecordingId::parse(&meta.recording_id) else {
                continue;
            };
            let (file, side) = (self.file(&id), self.meta_file(&id));
            let gone = blocking(move || {
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                std::fs::remove_file(&side)
            })
            .await;
            match gone {
                Ok(()) => {
                    info!(recording_id = %id, "recording deleted after its retention");
                    n += 1;
                }
                Err(e) => {
                    warn!(error = %e, recording_id = %id, "could not delete an old recording")
                }
            }
        }
        n
    }

    async fn all_metas(&self) -> std::io::Result<Vec<Meta>> {
        let dir = self.inner.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
                {
                    Some(m) => out.push(m),
                    None => warn!(path = %path.display(), "unreadable recording side file skipped"),
                }
            }
            Ok(out)
        })
        .await
    }

    /// Appends chunk `seq` of recording `id`. A chunk sent again (same `seq`, already stored)
    /// is taken as done; one out of order is refused.
    async fn append(
        &self,
        id: &RecordingId,
        seq: u64,
        bytes: Vec<u8>,
    ) -> Result<Meta, HttpRefusal> {
        let _w = self.inner.write.lock().await;
        let mut meta = self
            .read_meta(id)
            .await
            .map_err(|e| HttpRefusal::io(&e))?
            .ok_or_else(|| {
                HttpRefusal::new(
                    StatusCode::NOT_FOUND,
                    "RECORDING_NOT_FOUND",
                    "no such recording",
                )
            })?;
        if seq < meta.chunks {
            return Ok(meta);
        }
        if seq > meta.chunks {
            return Err(HttpRefusal::new(
                StatusCode::CONFLICT,
                "OUT_OF_ORDER",
                format!(
                    "chunk {seq} arrived before chunk {}; send them in order",
                    meta.chunks
                ),
            ));
        }
        let len = bytes.len() as u64;
        if meta.bytes.saturating_add(len) > self.inner.limits.max_bytes {
            return Err(HttpRefusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RECORDING_TOO_LARGE",
                format!(
                    "this recording reached the server's limit of {} MiB; what was recorded so far is kept",
                    self.inner.limits.max_bytes / (1024 * 1024)
                ),
            ));
        }
        let path = self.file(id);
        blocking(move || {
            use std::io::Write as _;
            let mut f = private_options().append(true).create(true).open(&path)?;
            f.write_all(&bytes)?;
            f.sync_data()
        })
        .await
        .map_err(|e| HttpRefusal::io(&e))?;
        meta.bytes += len;
        meta.chunks += 1;
        self.write_meta(&meta)
            .await
            .map_err(|e| HttpRefusal::io(&e))?;
        Ok(meta)
    }
}

#[async_trait]
impl RecordingFiles for RecordingStore {
    async fn prepare(
        &self,
        room: &VoiceRoom,
        recording: &Recording,
    ) -> Result<UploadGrant, RecordingFilesError> {
        let meta = Meta {
            recording_id: recording.id.to_string(),
            chat_room_id: room.chat_room().to_string(),
            voice_room_id: room.id().to_string(),
            by: recording.by.to_string(),
            started_at: recording.started_at.as_millis(),
            bytes: 0,
            chunks: 0,
        };
        let file = self.file(&recording.id);
        {
            let _w = self.inner.write.lock().await;
            blocking(move || {
                private_options()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(file)
                    .map(drop)
            })
            .await
            .and(self.write_meta(&meta).await)
            .map_err(|e| {
                warn!(error = %e, "could not create a recording file");
                RecordingFilesError::Unavailable
            })?;
        }
        let limits = self.inner.limits;
        let exp = SystemClock.now().plus(limits.upload_ttl).as_millis();
        let token = self.sign(&TokenClaims {
            p: "up".into(),
            rid: recording.id.to_string(),
            vr: room.id().to_string(),
            u: recording.by.to_string(),
            exp,
        });
        Ok(UploadGrant {
            recording_id: recording.id.to_string(),
            upload_url: format!("/recordings/{}/chunks", recording.id),
            upload_token: token,
            expires_at: exp,
            max_bytes: limits.max_bytes,
            max_chunk_bytes: limits.max_chunk_bytes as u64,
            parts: Vec::new(),
            chunks_per_part: 0,
        })
    }

    async fn list(
        &self,
        chat_room: &ChatRoomId,
        viewer: &UserId,
    ) -> Result<Vec<RecordingEntry>, RecordingFilesError> {
        let now = SystemClock.now();
        let mut metas = self.all_metas().await.map_err(|e| {
            warn!(error = %e, "could not list recordings");
            RecordingFilesError::Unavailable
        })?;
        metas.retain(|m| m.chat_room_id == chat_room.as_str() && !self.expired(m, now));
        metas.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then(b.recording_id.cmp(&a.recording_id))
        });
        let exp = now.plus(self.inner.limits.download_ttl).as_millis();
        Ok(metas
            .into_iter()
            .map(|m| {
                let token = self.sign(&TokenClaims {
                    p: "dl".into(),
                    rid: m.recording_id.clone(),
                    vr: m.voice_room_id.clone(),
                    u: viewer.to_string(),
                    exp,
                });
                RecordingEntry {
                    download_url: format!("/recordings/{}?token={token}", m.recording_id),
                    download_expires_at: exp,
                    recording_id: m.recording_id,
                    voice_room_id: m.voice_room_id,
                    by: m.by,
                    started_at: m.started_at,
                    bytes: m.bytes,
                    preparing: false,
                }
            })
            .collect())
    }
}

/// What the recording routes need.
#[derive(Clone)]
pub struct RecordingRoutes {
    /// The files.
    pub store: RecordingStore,
    /// The voice rules (may this recording still take uploads, may this user download).
    pub voice: Arc<VoiceService<ServerPorts>>,
}

fn parse_id(raw: &str) -> Result<RecordingId, HttpRefusal> {
    RecordingId::parse(raw)
        .map_err(|e| HttpRefusal::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string()))
}

/// `POST /recordings/{id}/chunks`: one chunk of the recorder's WebM stream, in order
/// (`X-Chunk-Seq: 0, 1, …`), with `Authorization: Bearer <upload token>`.
pub async fn upload(
    State(routes): State<Option<RecordingRoutes>>,
    UrlPath(raw): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match upload_inner(routes, &raw, &headers, body).await {
        Ok(meta) => Json(
            json!({"recordingId": meta.recording_id, "bytes": meta.bytes, "chunks": meta.chunks}),
        )
        .into_response(),
        Err(r) => r.into_response(),
    }
}

fn disabled() -> HttpRefusal {
    HttpRefusal::new(
        StatusCode::NOT_FOUND,
        "RECORDING_UNAVAILABLE",
        "recording is not available on this server",
    )
}

async fn upload_inner(
    routes: Option<RecordingRoutes>,
    raw: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Meta, HttpRefusal> {
    let routes = routes.ok_or_else(disabled)?;
    let id = parse_id(raw)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(HttpRefusal::unauthorized)?;
    let claims = routes.store.verify(token, "up", &id, SystemClock.now())?;
    let seq: u64 = headers
        .get("x-chunk-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            HttpRefusal::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "X-Chunk-Seq must be the chunk's number (0, 1, 2, …)",
            )
        })?;
    let voice_room = VoiceRoomId::parse(&claims.vr).map_err(|_| HttpRefusal::unauthorized())?;
    routes
        .voice
        .recording_upload(&voice_room, &id)
        .await
        .map_err(|e: RecordingUploadError| HttpRefusal::use_case(&e))?;
    let limits = routes.store.limits();
    let too_large = || {
        HttpRefusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "CHUNK_TOO_LARGE",
            format!("a chunk may be at most {} bytes", limits.max_chunk_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_chunk_bytes as u64) {
        return Err(too_large());
    }
    let bytes = tokio::time::timeout(
        limits.chunk_timeout,
        axum::body::to_bytes(body, limits.max_chunk_bytes),
    )
    .await
    .map_err(|_| {
        HttpRefusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "TIMEOUT",
            "the chunk took too long to arrive; send it again",
        )
    })?
    .map_err(|_| too_large())?;
    routes.store.append(&id, seq, bytes.to_vec()).await
}

/// The `token` parameter of a download link's query. Read by hand, not by a query extractor,
/// so that a malformed query is a JSON `401` like any bad link, not the extractor's plain-text
/// `400`. Tokens are base64url and `.`, which need no decoding.
fn token_param(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// `GET /recordings/{id}?token=…`: the file, for the user the link was minted for, if that
/// user is still the admin or an approved member of the recording's chat room.
pub async fn download(
    State(routes): State<Option<RecordingRoutes>>,
    UrlPath(raw): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match download_inner(routes, &raw, token_param(query.as_deref())).await {
        Ok(r) => r,
        Err(r) => r.into_response(),
    }
}

async fn download_inner(
    routes: Option<RecordingRoutes>,
    raw: &str,
    token: Option<&str>,
) -> Result<Response, HttpRefusal> {
    let routes = routes.ok_or_else(disabled)?;
    let id = parse_id(raw)?;
    let token = token.ok_or_else(HttpRefusal::unauthorized)?;
    let now = SystemClock.now();
    let claims = routes.store.verify(token, "dl", &id, now)?;
    let not_found = || {
        HttpRefusal::new(
            StatusCode::NOT_FOUND,
            "RECORDING_NOT_FOUND",
            "this recording does not exist any more",
        )
    };
    let meta = routes
        .store
        .read_meta(&id)
        .await
        .map_err(|e| HttpRefusal::io(&e))?
        .filter(|m| !routes.store.expired(m, now))
        .ok_or_else(not_found)?;
    let (user, chat_room) = match (
        UserId::parse(&claims.u),
        ChatRoomId::parse(&meta.chat_room_id),
    ) {
        (Ok(u), Ok(c)) => (u, c),
        _ => return Err(HttpRefusal::unauthorized()),
    };
    routes
        .voice
        .may_download(&user, &chat_room)
        .await
        .map_err(|e: RecordingAccessError| HttpRefusal::use_case(&e))?;
    let path = routes.store.file(&id);
    let (file, len) = blocking(move || {
        let f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    })
    .await
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => not_found(),
        _ => HttpRefusal::io(&e),
    })?;
    let stream = futures_util::stream::unfold(Some(file), |f| async move {
        let mut f = f?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut buf = vec![0u8; 64 * 1024];
            let n = f.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((f, buf))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
        match read {
            Ok((_, buf)) if buf.is_empty() => None,
            Ok((f, buf)) => Some((Ok(bytes_of(buf)), Some(f))),
            Err(e) => Some((Err(e), None)),
        }
    });
    info!(recording_id = %id, "recording downloaded");
    Ok((
        [
            (header::CONTENT_TYPE, "audio/webm".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.webm\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}
