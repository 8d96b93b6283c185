//! Voice that survives real networks, in headless Chromium (issue 12): this test runs the real
//! `voice-server` binary on a private data dir and drives `tests/browser/resilience.mjs`, which
//! puts a loopback TCP proxy in front of each of three users and, with no click by anyone: restarts
//! ICE on one link, drops one user for 5 s, reloads one page, black-holes one user for 40 s (only
//! when the server answers `ping`; otherwise reported SKIPPED by the script), and — when the
//! script prints `@@RESTART` — this test restarts the server (SIGTERM, start again on the same
//! data dir) and answers `@@RESTARTED <url>`. Each time everyone must be back in voice and
//! audible. The figures (reconnect → audible, reload → in voice, detection times) are printed for
//! BENCHMARKS.md; none is asserted as a time.
//!
//! Same prerequisites and skip rule as `browser.rs`.

mod browser_support;
mod server_process;

use std::process::Stdio;
use std::time::{Duration, Instant};

use browser_support::{chromium_path, prerequisites_present, repo_root};
use serde_json::Value;
use server_process::ServerProcess;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

/// Upper bound for the whole Node run; the script bounds each of its own waits below this.
const NODE_TIMEOUT: Duration = Duration::from_secs(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_resumes_after_drops_reloads_black_holes_and_restarts() {
    let root = repo_root();
    if !prerequisites_present(&root, "browser resilience") {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    // The server creates it with mode 0700.
    let data = tmp.path().join("voice-data");
    let mut server = ServerProcess::start(&data, &[]).await;
    let url = format!("http://{}/", server.addr());

    let started = Instant::now();
    let mut child = Command::new("node")
        .arg("resilience.mjs")
        .arg(&url)
        .current_dir(root.join("tests/browser"))
        .env("CHROMIUM_PATH", chromium_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stderr = tokio::spawn(async move {
        let mut out = String::new();
        let _ = stderr_pipe.read_to_string(&mut out).await;
        out
    });

    let mut summary: Option<Value> = None;
    let mut out_lines = Vec::new();
    let mut restarts = 0;
    let deadline = tokio::time::Instant::now() + NODE_TIMEOUT;
    loop {
        let line = match tokio::time::timeout_at(deadline, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => break,
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "resilience.mjs did not finish within {NODE_TIMEOUT:?}; its output so far:\n{}",
                    out_lines.join("\n")
                );
            }
        };
        if line == "@@RESTART" {
            restarts += 1;
            let status = server.terminate();
            eprintln!("server stopped ({status}); starting it again on the same data dir");
            server = ServerProcess::start(&data, &[]).await;
            let answer = format!("@@RESTARTED http://{}/\n", server.addr());
            stdin
                .write_all(answer.as_bytes())
                .await
                .expect("tell the script the new address");
            stdin.flush().await.expect("flush the script's stdin");
            continue;
        }
        if let Some(json) = line.strip_prefix("SUMMARY ") {
            summary = Some(serde_json::from_str(json).expect("the summary is JSON"));
        }
        out_lines.push(line);
    }
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .expect("node exits after closing its output")
        .expect("waiting for node");
    let err = stderr.await.unwrap_or_default();
    eprintln!(
        "resilience.mjs finished in {:.1} s with {status}\n--- stderr ---\n{err}\n--- stdout ---\n{}",
        started.elapsed().as_secs_f64(),
        out_lines.join("\n")
    );
    assert!(
        status.success(),
        "the resilience run failed ({status}):\n{err}"
    );
    let summary = summary.expect("the script printed its summary");
    assert_eq!(summary["ok"], true, "summary says not ok: {summary}");
    assert_eq!(restarts, 1, "the script asked for exactly one restart");
    let figures = &summary["figures"];
    for must in [
        "iceRestartToAudibleMs",
        "dropNetworkBackToAudibleMs",
        "reloadToInVoiceMs",
        "restartToAudibleMs",
    ] {
        assert!(
            figures[must].is_number(),
            "figure {must} missing: {summary}"
        );
    }
    if summary["skipped"]["blackHole"].is_null() {
        assert!(
            figures["blackHoleServerDetectMs"].is_number(),
            "the black hole ran but was not detected: {summary}"
        );
    }
}
