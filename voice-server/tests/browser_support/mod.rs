//! What the real-browser tests (`browser.rs`, `browser_video.rs`, `browser_resilience.rs`)
//! share: where the repo, Chromium and Node are, the Node child that dies with the test, the
//! audio level a script measured, and the TEAM rule for missing prerequisites (fail under
//! `VOICE_TEST_STRICT=1`, else skip loudly).
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The workspace root (tests/browser lives there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("voice-server sits in the workspace root")
        .to_path_buf()
}

/// `CHROMIUM_PATH`, or Debian's `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to run a real browser, if anything.
pub fn missing_prerequisite(root: &Path) -> Option<String> {
    let chromium = chromium_path();
    if !chromium.is_file() {
        return Some(format!(
            "no Chromium at {} (apt-get install chromium)",
            chromium.display()
        ));
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(s) if s.success()) {
        return Some("no `node` on PATH (Node 20 needed)".into());
    }
    if !root
        .join("tests/browser/node_modules/playwright-core/package.json")
        .is_file()
    {
        return Some(
            "tests/browser/node_modules/playwright-core is missing (cd tests/browser && npm ci)"
                .into(),
        );
    }
    None
}

/// The TEAM rule for missing external prerequisites: fail under `VOICE_TEST_STRICT=1`, else skip
/// loudly. Returns whether the test may go on.
pub fn prerequisites_present(root: &Path, what: &str) -> bool {
    let Some(why) = missing_prerequisite(root) else {
        return true;
    };
    if std::env::var("VOICE_TEST_STRICT").as_deref() == Ok("1") {
        panic!("browser test prerequisite missing: {why}; install with scripts/setup-test-deps");
    }
    // Straight to stderr, past libtest's output capture, so a skip is never silent.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {what}: {why}; run scripts/test to install"
    );
    false
}

/// Owns the Node process: killed on drop, so a failed or timed-out test leaves nothing behind
/// (Chromium exits with it: playwright drives it over a pipe that closes).
pub struct NodeRun(pub Option<tokio::process::Child>);

impl Drop for NodeRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.start_kill();
        }
    }
}

/// Reads a child's pipe to the end in the background (so a chatty child never blocks on a full
/// pipe), giving the text when done.
pub fn read_all<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    pipe: Option<R>,
) -> tokio::task::JoinHandle<String> {
    use tokio::io::AsyncReadExt as _;
    tokio::spawn(async move {
        let mut out = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut out).await;
        }
        out
    })
}

/// The loudest sample `listener` measured from `speaker` (the scripts' `levels` shape).
pub fn peak(v: &serde_json::Value, listener: &str, speaker: &str) -> f64 {
    v[listener][speaker]["peak"]
        .as_f64()
        .unwrap_or_else(|| panic!("summary lacks the level {listener} measured for {speaker}: {v}"))
}

/// Runs `node <script> <args…>` in tests/browser against Chromium, within `deadline` (killed
/// on timeout or on drop), and asserts it succeeded; returns the JSON summary it printed on
/// stdout, after echoing its stderr and summary for the log.
pub async fn run_node_script(
    root: &Path,
    script: &str,
    args: &[String],
    deadline: std::time::Duration,
) -> serde_json::Value {
    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(root.join("tests/browser"))
        .env("CHROMIUM_PATH", chromium_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let mut run = NodeRun(Some(child));
    let status =
        tokio::time::timeout(deadline, run.0.as_mut().expect("child present").wait()).await;
    let status = match status {
        Ok(s) => s.expect("waiting for node"),
        Err(_) => {
            drop(run);
            let err = stderr.await.unwrap_or_default();
            panic!("{script} did not finish within {deadline:?}; its stderr:\n{err}");
        }
    };
    let out = stdout.await.expect("stdout reader");
    let err = stderr.await.expect("stderr reader");
    eprintln!(
        "{script} finished in {:.1} s with {status}\n--- stderr ---\n{err}\n--- summary ---\n{out}",
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "{script} failed ({status}):\n{err}");
    serde_json::from_str(&out).expect("the summary on stdout is JSON")
}
