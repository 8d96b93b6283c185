//! The original setup guide's manual voice checklist, run for real: this test starts the server
//! on an ephemeral loopback port and drives three headless Chromium users through it with
//! `tests/browser/checklist.mjs` (Node + playwright-core): create a room, request and approve
//! joins, start and join voice, hear each other (measured audio levels per remote peer), mute
//! (measured silence), refresh credentials before they expire, End Voice offered only to the
//! master or admin (others see Leave), the master's end (every page torn down), a user whose
//! microphone is denied, and a phone-sized page with a long room name (no horizontal overflow,
//! voice controls first).
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM_PATH`), `node` and `tests/browser/node_modules`
//! (`scripts/setup-test-deps` installs all three). Without them the test fails when
//! `VOICE_TEST_STRICT=1` and otherwise prints `SKIPPED` and passes.

mod browser_support;

use std::time::Duration;

use browser_support::{peak, prerequisites_present, repo_root, run_node_script};
use voice_server::config::Config;

/// Upper bound for the whole Node run; the script bounds each of its own waits far below this.
const NODE_TIMEOUT: Duration = Duration::from_secs(150);
/// Short voice credentials, so that the refresh before expiry happens during the run.
const CREDENTIAL_TTL: Duration = Duration::from_secs(8);
/// Audible: max peak over a 1 s window above this. Silent: below this.
const AUDIBLE: f64 = 0.01;
const SILENT: f64 = 0.001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_checklist_passes_in_headless_chromium() {
    let root = repo_root();
    if !prerequisites_present(&root, "browser checklist") {
        return;
    }

    let config = Config {
        credential_ttl: CREDENTIAL_TTL,
        ..Config::ephemeral()
    };
    let server = voice_server::spawn(config)
        .await
        .expect("server starts on 127.0.0.1:0");
    let url = server.http_url();

    let summary = run_node_script(
        &root,
        "checklist.mjs",
        &[
            url,
            "--expect-refresh-within".to_owned(),
            CREDENTIAL_TTL.as_secs().to_string(),
        ],
        NODE_TIMEOUT,
    )
    .await;
    // Check the measurements themselves, not only the script's verdict.
    assert_eq!(summary["ok"], true, "summary says not ok: {summary}");
    let all = &summary["levels"]["allUnmuted"];
    for (listener, speakers) in [
        ("Alice", ["Bob", "Carol"]),
        ("Bob", ["Alice", "Carol"]),
        ("Carol", ["Alice", "Bob"]),
    ] {
        for speaker in speakers {
            let p = peak(all, listener, speaker);
            assert!(p > AUDIBLE, "{listener} heard {speaker} at peak {p}");
        }
    }
    let muted = &summary["levels"]["carolMuted"];
    for (listener, other) in [("Alice", "Bob"), ("Bob", "Alice")] {
        let c = peak(muted, listener, "Carol");
        assert!(c < SILENT, "{listener} heard muted Carol at peak {c}");
        let o = peak(muted, listener, other);
        assert!(
            o > AUDIBLE,
            "{listener} heard {other} at peak {o} while Carol was muted"
        );
    }
    let steps: Vec<&str> = summary["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    for must in [
        "every page refreshes its voice credentials",
        "Carol (neither master nor admin) cannot end",
        "every page shows the room ended",
        "Start Voice Chat shows \"Microphone access denied\"",
        "on a 390x844 phone a long room name does not widen the page",
    ] {
        assert!(
            steps.iter().any(|s| s.starts_with(must)),
            "step {must:?} did not run: {steps:?}"
        );
    }

    server.shutdown().await.expect("server shuts down cleanly");
}
