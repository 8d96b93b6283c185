//! Video and screen sharing (issue 17), run for real: the server on an ephemeral loopback port
//! and three headless Chromium users driven by `tests/browser/video.mjs` (fake camera, fake
//! screen): cameras on and off, every page decoding every camera sent to it (framesDecoded
//! growing), screen shares reaching every peer and stopping cleanly (from the page and as the
//! browser's own "Stop sharing" does), one peer connection per pair throughout, and audio still
//! flowing afterwards.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM_PATH`), `node` and `tests/browser/node_modules`
//! (`scripts/setup-test-deps` installs all three). Without them the test fails when
//! `VOICE_TEST_STRICT=1` and otherwise prints `SKIPPED` and passes.

mod browser_support;

use std::time::Duration;

use browser_support::{peak, prerequisites_present, repo_root, run_node_script};
use serde_json::Value;
use voice_server::config::Config;

/// Upper bound for the whole Node run; the script bounds each of its own waits far below this.
const NODE_TIMEOUT: Duration = Duration::from_secs(150);
/// Audible: max peak over a 1 s window above this.
const AUDIBLE: f64 = 0.01;

fn frames(v: &Value, key: &str, sender: &str) -> u64 {
    v[key][sender]
        .as_u64()
        .unwrap_or_else(|| panic!("summary lacks {key} frames from {sender}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_and_screen_shares_reach_every_peer_on_the_existing_links() {
    let root = repo_root();
    if !prerequisites_present(&root, "browser video") {
        return;
    }
    let server = voice_server::spawn(Config::ephemeral())
        .await
        .expect("server starts on 127.0.0.1:0");
    let url = server.http_url();

    let summary = run_node_script(&root, "video.mjs", &[url], NODE_TIMEOUT).await;
    // Check the measurements themselves, not only the script's verdict.
    assert_eq!(summary["ok"], true, "summary says not ok: {summary}");
    let video = &summary["video"];
    for (key, sender) in [
        ("Alice<-camera", "Bob"),
        ("Bob<-camera", "Alice"),
        ("Carol<-camera", "Bob"),
        ("Alice<-screen", "Carol"),
        ("Bob<-screen", "Carol"),
        ("Bob<-screen:hosts", "Alice"),
        ("Carol<-screen:hosts", "Alice"),
    ] {
        let f = frames(video, key, sender);
        assert!(f > 5, "{key}: only {f} frames decoded from {sender}");
    }
    let levels = &summary["levels"];
    for (listener, speakers) in [
        ("Alice", ["Bob", "Carol"]),
        ("Bob", ["Alice", "Carol"]),
        ("Carol", ["Alice", "Bob"]),
    ] {
        for speaker in speakers {
            let p = peak(levels, listener, speaker);
            assert!(
                p > AUDIBLE,
                "after the video changes {listener} heard {speaker} at peak {p}"
            );
        }
    }
    let steps: Vec<&str> = summary["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    for must in [
        "no new peer connection: one per pair",
        "Carol's share ends as with the browser's \"Stop sharing\"",
        "Bob shares and stops from the page",
        "Alice lets only hosts share",
        "a screen sent without asking is not shown",
        "Alice (the host) shares",
        "still one peer connection per pair",
    ] {
        assert!(
            steps.iter().any(|s| s.starts_with(must)),
            "step {must:?} did not run: {steps:?}"
        );
    }

    server.shutdown().await.expect("server shuts down cleanly");
}
