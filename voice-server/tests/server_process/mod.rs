//! The real `voice-server` binary as a child process on 127.0.0.1:0, and a small protocol client
//! that tells a lost connection (the server died) apart from a reply. Shared by `crash.rs` and
//! `data_dir.rs`; every child is killed when its handle drops, also when a test panics.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single reply, start-up or exit may take. Generous: the debug binary shares
/// two cores with other test binaries and commits with an `fsync` each.
pub const WAIT: Duration = Duration::from_secs(30);

/// The server binary Cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_voice-server");

/// `voice-server --addr 127.0.0.1:0 --log-format json <extra> --data-dir <dir>`, with no
/// inherited `VOICE_*` variable (so the caller's environment cannot switch it to memory) and
/// `RUST_LOG=info` (so the "listening" line that carries the port is printed).
pub fn command(data_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = base_command(extra);
    cmd.arg("--data-dir").arg(data_dir);
    cmd
}

/// [`command`] without `--data-dir`.
pub fn base_command(extra: &[&str]) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.args(["--addr", "127.0.0.1:0", "--log-format", "json"])
        .args(extra);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VOICE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    cmd
}

/// A running server process. Dropping it SIGKILLs and reaps the process if it still runs.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary on `data_dir` and waits for its "voice-server listening" log line,
    /// which names the bound address (the port is chosen by the kernel: no race for a port).
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_command(command(data_dir, extra)).await
    }

    /// [`ServerProcess::start`] with a prepared command.
    pub async fn start_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the voice-server binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        // Both pipes are drained until the process dies, so its logging never blocks on a
        // full pipe.
        {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                let mut tx = Some(tx);
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        if v["message"] == "voice-server listening" {
                            if let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
                                if let Some(tx) = tx.take() {
                                    let _ = tx.send(addr);
                                }
                            }
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(format!("stderr: {line}"));
                }
            });
        }
        let mut me = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(addr)) => me.addr = addr,
            _ => panic!(
                "the server did not report its address (exit: {:?}); log:\n{}",
                me.child.try_wait(),
                me.log_text()
            ),
        }
        me
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far (stdout JSON lines; stderr lines prefixed `stderr: `).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The log as one string, for failure messages.
    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// The JSON log lines whose `message` is `message`.
    pub fn log_events(&self, message: &str) -> Vec<Value> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// `kill -9`: no shutdown code runs. Returns once the process is gone.
    pub fn kill9(&mut self) -> ExitStatus {
        // `Child::kill` is SIGKILL on Unix.
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server")
    }

    /// SIGTERM (what `systemctl stop` or Ctrl-C in a container sends) and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        self.wait_exit()
    }

    /// Waits (at most [`WAIT`]) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit in time; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            let lines = self.log_lines();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "--- last server log lines (pid {}) ---\n{}",
                self.child.id(),
                tail.join("\n")
            );
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The connection is gone (the server died or closed it) before the reply arrived: the request
/// may or may not have been carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

/// A protocol client that drops events and reports [`Lost`] instead of panicking when the
/// server goes away, so a load generator can keep exactly the acknowledged writes.
pub struct Conn {
    ws: Ws,
    next_id: u64,
    /// Requests refused with `RATE_LIMITED` and sent again.
    pub rate_limited: u64,
}

impl Conn {
    /// Opens `url`.
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("WebSocket connects");
        Self {
            ws,
            next_id: 0,
            rate_limited: 0,
        }
    }

    /// Sends `action` with `fields` and returns its reply (`ok` true or false), skipping events.
    /// A `RATE_LIMITED` refusal (the frame was not processed) is retried after a pause.
    ///
    /// # Panics
    /// If no reply or loss arrives within [`WAIT`].
    pub async fn call(&mut self, action: &str, fields: Value) -> Result<Value, Lost> {
        loop {
            let reply = self.call_once(action, fields.clone()).await?;
            if reply["ok"] == false && reply["error"]["code"] == "RATE_LIMITED" {
                self.rate_limited += 1;
                tokio::time::sleep(Duration::from_millis(40)).await;
                continue;
            }
            return Ok(reply);
        }
    }

    async fn call_once(&mut self, action: &str, fields: Value) -> Result<Value, Lost> {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let mut frame = fields;
        frame["action"] = json!(action);
        frame["requestId"] = json!(id);
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|_| Lost)?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no reply to {action} within {WAIT:?}"));
            match next {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
                    if v["type"] == "reply" && v["requestId"] == json!(id) {
                        assert_eq!(v["action"], json!(action), "reply names the action");
                        return Ok(v);
                    }
                    // An event (or a reply to nothing we wait for): not a reply to this.
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(Lost),
                Some(Ok(_)) => {}
            }
        }
    }

    /// A request that must succeed on a live server; returns its `data`.
    pub async fn ok(&mut self, action: &str, fields: Value) -> Value {
        let reply = self
            .call(action, fields)
            .await
            .unwrap_or_else(|Lost| panic!("connection lost during {action}"));
        assert_eq!(reply["ok"], true, "{action} should succeed: {reply}");
        reply["data"].clone()
    }

    /// Every item of a paged list (`listRooms`, `listMembers`, `getMessages`): follows
    /// `nextCursor` until it is `null`, since a page holds at most 50–100 items and a check that
    /// read only the first page would call everything past it lost. `key` names the array in
    /// `data`. `getMessages` pages go back in time (each is oldest first), so `older_pages`
    /// puts each later page in front to keep the whole list oldest first.
    pub async fn all_pages(
        &mut self,
        action: &str,
        fields: Value,
        key: &str,
        older_pages: bool,
    ) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..1_000 {
            let mut request = fields.clone();
            if !cursor.is_null() {
                request["cursor"] = cursor.clone();
            }
            let data = self.ok(action, request).await;
            let page = data[key]
                .as_array()
                .unwrap_or_else(|| panic!("{action} has no {key}: {data}"))
                .clone();
            if older_pages {
                all.splice(0..0, page);
            } else {
                all.extend(page);
            }
            cursor = data["nextCursor"].clone();
            if cursor.is_null() {
                return all;
            }
        }
        panic!("{action} kept returning a nextCursor after 1 000 pages");
    }

    /// A request that must be refused on a live server; returns the error code.
    pub async fn refused(&mut self, action: &str, fields: Value) -> String {
        let reply = self
            .call(action, fields)
            .await
            .unwrap_or_else(|Lost| panic!("connection lost during {action}"));
        assert_eq!(reply["ok"], false, "{action} should be refused: {reply}");
        reply["error"]["code"]
            .as_str()
            .expect("error code")
            .to_owned()
    }

    /// Waits for the server to end the connection; true if it sent a close frame with `code`.
    pub async fn closed_with(&mut self, code: u16) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server closes in time")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.is_some_and(|f| u16::from(f.code) == code)
                }
                None | Some(Err(_)) => return false,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Who a user is, as the first `hello` told it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The display name.
    pub name: String,
    /// The user id.
    pub user_id: String,
    /// The resume token to come back as the same user.
    pub resume_token: String,
}

/// Connects and says `hello` as a new user `name`.
pub async fn new_user(url: &str, name: &str) -> (Conn, Identity) {
    let mut c = Conn::connect(url).await;
    let d = c.ok("hello", json!({ "name": name })).await;
    assert_eq!(d["resumed"], false);
    let id = Identity {
        name: name.to_owned(),
        user_id: d["userId"].as_str().expect("userId").to_owned(),
        resume_token: d["resumeToken"].as_str().expect("resumeToken").to_owned(),
    };
    (c, id)
}

/// Connects and says `hello` with `id`'s resume token; asserts the server took it back as the
/// same user.
pub async fn resume(url: &str, id: &Identity) -> Conn {
    let mut c = Conn::connect(url).await;
    let d = c
        .ok(
            "hello",
            json!({ "name": id.name, "resumeToken": id.resume_token }),
        )
        .await;
    assert_eq!(
        d["resumed"], true,
        "{} is resumed with its token after the restart: {d}",
        id.name
    );
    assert_eq!(
        d["userId"],
        json!(id.user_id),
        "same user id for {}",
        id.name
    );
    c
}
