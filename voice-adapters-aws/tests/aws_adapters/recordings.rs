//! `S3Recordings` on moto's S3: the recorder's parts go up through the presigned URLs the
//! adapter mints (each for exactly one key), `finish` assembles them into one object in part
//! order (one `PutObject`, or a multipart upload past 5 MiB) and deletes the parts, and the
//! listing hands out a presigned `GetObject` for that one key, "preparing" before.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use voice_adapters_aws::recordings::{file_key, part_key, S3_MIN_PART_BYTES};
use voice_adapters_aws::testing::MotoServer;
use voice_adapters_aws::{s3_client, RecordingSettings, S3Recordings};
use voice_domain::recording::RecordingId;
use voice_domain::Timestamp;
use voice_executor::recording::RecordingFiles;

use crate::support::{chat, room, user};

/// One HTTP/1.1 request to a `http://127.0.0.1:PORT/...` URL (moto): status and body.
async fn http(method: &str, url: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    assert!(host.starts_with("127.0.0.1:"), "loopback only: {host}");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nContent-Type: audio/webm\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head[9..12].parse().expect("a status");
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

async fn setup() -> Option<(MotoServer, aws_sdk_s3::Client, S3Recordings)> {
    let server = MotoServer::start_or_skip()?;
    let s3 = s3_client(&server.sdk_config(), true);
    let bucket = format!("rec-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let files = S3Recordings::new(s3.clone(), &bucket).with_settings(RecordingSettings {
        parts_per_batch: 4,
        assemble_part_bytes: S3_MIN_PART_BYTES,
        ..RecordingSettings::default()
    });
    Some((server, s3, files))
}

fn recorded_room(chat_room: &str) -> voice_domain::VoiceRoom {
    let mut r = room("voice-1", chat_room, "alice", "c-alice");
    r.start_recording(
        &user("alice"),
        false,
        RecordingId::parse("rec-1").unwrap(),
        Timestamp::from_millis(1_000),
    )
    .expect("alice may record");
    r
}

#[tokio::test]
async fn parts_put_through_presigned_urls_become_one_downloadable_file_in_order() {
    let Some((_server, s3, files)) = setup().await else {
        return;
    };
    let room = recorded_room("room-1");
    let rec = room.recording().cloned().unwrap();
    let grant = files.prepare(&room, &rec).await.expect("prepare");
    assert!(grant.upload_token.is_empty() && grant.upload_url.is_empty());
    assert_eq!(grant.parts.len(), 4, "the first batch");
    // Each URL is for exactly its part's key.
    for p in &grant.parts {
        let key = part_key(&chat("room-1"), &rec.id, p.part);
        assert!(
            p.url.contains(&format!("/{key}?")),
            "{} is not for {key}",
            p.url
        );
        assert!(p.url.contains("X-Amz-Expires=300"), "{}", p.url);
    }
    let more = files.upload_urls(&room, &rec, 4).await.expect("more URLs");
    assert_eq!(
        more.parts.iter().map(|p| p.part).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    // Put parts 0..6 out of order (uploads race); part 7 never comes (the recorder died).
    let urls: Vec<_> = grant.parts.iter().chain(&more.parts).collect();
    for i in [2usize, 0, 1, 5, 3, 4] {
        let (status, _) = http("PUT", &urls[i].url, format!("<{i}>").as_bytes()).await;
        assert_eq!(status, 200, "part {i}");
    }
    let listed = files.list(&chat("room-1"), &user("bob")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].preparing && listed[0].download_url.is_empty());

    files
        .finish(&chat("room-1"), &rec.id)
        .await
        .expect("finish");
    files
        .finish(&chat("room-1"), &rec.id)
        .await
        .expect("finishing twice is fine");

    let listed = files.list(&chat("room-1"), &user("bob")).await.unwrap();
    let e = &listed[0];
    assert!(!e.preparing);
    assert_eq!(
        (
            e.recording_id.as_str(),
            e.voice_room_id.as_str(),
            e.by.as_str()
        ),
        ("rec-1", "voice-1", "alice")
    );
    assert_eq!(e.started_at, 1_000);
    let key = file_key(&chat("room-1"), &rec.id);
    assert!(
        e.download_url.contains(&format!("/{key}?")),
        "{}",
        e.download_url
    );
    let (status, body) = http("GET", &e.download_url, b"").await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body).unwrap(), "<0><1><2><3><4><5>");
    assert_eq!(e.bytes, 18);
    // The parts are gone; only the manifest and the file are left.
    let left = s3
        .list_objects_v2()
        .bucket(files_bucket(&s3).await)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<_> = left.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "recordings/room-1/rec-1.json",
            "recordings/room-1/rec-1.webm"
        ]
    );
}

async fn files_bucket(s3: &aws_sdk_s3::Client) -> String {
    let b = s3.list_buckets().send().await.unwrap();
    b.buckets()[0].name().unwrap().to_owned()
}

#[tokio::test]
async fn a_recording_past_5_mib_is_assembled_with_a_multipart_upload() {
    let Some((_server, _s3, files)) = setup().await else {
        return;
    };
    let room = recorded_room("room-big");
    let rec = room.recording().cloned().unwrap();
    let grant = files.prepare(&room, &rec).await.unwrap();
    let size = S3_MIN_PART_BYTES / 2 + 1;
    let mut want = Vec::new();
    for p in &grant.parts[..3] {
        let body = vec![b'a' + p.part as u8; size];
        want.extend_from_slice(&body);
        assert_eq!(http("PUT", &p.url, &body).await.0, 200);
    }
    files
        .finish(&chat("room-big"), &rec.id)
        .await
        .expect("finish");
    let e = files
        .list(&chat("room-big"), &user("bob"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(e.bytes, want.len() as u64);
    let (status, body) = http("GET", &e.download_url, b"").await;
    assert_eq!(status, 200);
    assert!(body == want, "the file is the parts in order");
}

#[tokio::test]
async fn a_room_lists_only_its_own_recordings_even_with_a_hostile_chat_room_id() {
    let Some((_server, _s3, files)) = setup().await else {
        return;
    };
    for chat_room in ["room-a", "room-a/..", "room-a%2F"] {
        let room = recorded_room(chat_room);
        let rec = room.recording().cloned().unwrap();
        files.prepare(&room, &rec).await.unwrap();
    }
    for chat_room in ["room-a", "room-a/..", "room-a%2F"] {
        let listed = files.list(&chat(chat_room), &user("bob")).await.unwrap();
        assert_eq!(listed.len(), 1, "{chat_room}");
    }
    assert!(files
        .list(&chat("room-b"), &user("bob"))
        .await
        .unwrap()
        .is_empty());
}
