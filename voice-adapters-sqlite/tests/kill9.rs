//! "Every acknowledged write survives `kill -9`", at the adapter level: a child process writes
//! rooms, memberships, messages and voice rooms as fast as it can, printing `ack` after each
//! call returns; the parent SIGKILLs it mid-stream, reopens the data directory and finds every
//! acknowledged write.
//!
//! The child is this same test binary, re-run with an environment variable that tells the one
//! test below to play the writer instead of the checker.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chat_domain::{ChatMessage, ChatStore as _, RoomRecord};
use voice_adapters_sqlite::{Database, OpenOptions, SqliteChat, SqliteStore};
use voice_domain::contract::sample_room;
use voice_domain::ports::{MemberState, VoiceRoomStore};
use voice_domain::{ChatRoomId, UserId};

const CHILD_ENV: &str = "VOICE_SQLITE_KILL9_CHILD_DIR";
const TEST_NAME: &str = "acknowledged_writes_survive_kill_9";

fn room(i: u64) -> ChatRoomId {
    ChatRoomId::parse(format!("room-{i}")).unwrap()
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// The writer: never returns; the parent kills it.
fn child(dir: &str) -> ! {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = Database::open_dir(dir.as_ref(), OpenOptions::default()).unwrap();
        let chat = SqliteChat::new(db.clone());
        let store = SqliteStore::new(db);
        for i in 0.. {
            let r = room(i);
            chat.create_room(
                &RoomRecord {
                    id: r.clone(),
                    name: format!("Room {i}"),
                    admin: user("admin"),
                },
                usize::MAX,
            )
            .await
            .unwrap();
            chat.request_join(&r, &user("member"), chat_domain::JoinQuotas::UNLIMITED)
                .await
                .unwrap();
            chat.decide_join(&r, &user("member"), true).await.unwrap();
            let m = ChatMessage {
                room_id: r.to_string(),
                user_id: "member".into(),
                name: "Member".into(),
                text: format!("hello {i}"),
                at: i,
            };
            chat.append_message(&r, &m).await.unwrap();
            let v = sample_room("k9", &format!("v{i}"), &format!("chat-{i}"), "admin", "c1");
            store.create_if_none_active(&v).await.unwrap();
            // Only now, after every call above returned, is the iteration acknowledged.
            println!("ack {i}");
        }
    });
    unreachable!("the writer loops until killed")
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = private_tempdir();
    let mut writer = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill on every exit path, including a failed assertion below.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = writer.stdout.take().unwrap();
    let mut writer = KillOnDrop(writer);
    let mut acked: Option<u64> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            acked = Some(n.parse().unwrap());
        }
        if acked.is_some_and(|n| n >= 300) || Instant::now() > deadline {
            // SIGKILL while the writer is in the middle of its next iteration.
            writer.0.kill().unwrap();
            break;
        }
    }
    writer.0.wait().unwrap();
    let last = acked.expect("the writer acknowledged writes before it was killed");
    assert!(
        last >= 300,
        "the writer was too slow: only {last} acknowledged"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The lock died with the process: the data dir opens again.
        let db = Database::open_dir(dir.path(), OpenOptions::default()).unwrap();
        let chat = SqliteChat::new(db.clone());
        let store = SqliteStore::new(db);
        for i in 0..=last {
            let r = room(i);
            let rec = chat.room(&r).await.unwrap();
            assert_eq!(
                rec.map(|x| x.name),
                Some(format!("Room {i}")),
                "room {i} was acknowledged"
            );
            assert!(
                chat.members(&r)
                    .await
                    .unwrap()
                    .contains(&(user("member"), MemberState::Approved)),
                "approval in room {i} was acknowledged"
            );
            let texts: Vec<_> = chat
                .message_page(&r, None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.message.text)
                .collect();
            assert_eq!(texts, vec![format!("hello {i}")], "message {i}");
            let v = sample_room("k9", &format!("v{i}"), &format!("chat-{i}"), "admin", "c1");
            assert!(
                store.get(v.id()).await.unwrap().is_some(),
                "voice room {i} was acknowledged"
            );
        }
        // The interrupted iteration left whole transactions only: a room, if there, has its
        // admin membership.
        let next = room(last + 1);
        if chat.room(&next).await.unwrap().is_some() {
            assert!(chat
                .members(&next)
                .await
                .unwrap()
                .contains(&(user("admin"), MemberState::Approved)));
        }
    });
}

/// A temporary data directory as the server makes one: mode 0700 (`Database::open_dir`
/// refuses a directory other local users can read, because it holds the token key).
fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}
