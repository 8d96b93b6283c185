//! Recording with consent (issue 17 item 3), run for real: the server on an ephemeral loopback
//! port with a recordings directory, and three headless Chromium users driven by
//! `tests/browser/recording.mjs`: the host records while the others talk (fake microphones),
//! a joiner is asked before its microphone opens, the recorder's browser uploads the mix, and a
//! member downloads and decodes it. Here the file on disk is checked too: it exists, is private
//! (0600), starts with the EBML header, is WebM with Opus, and holds what the page decoded; with
//! `ffprobe` on the PATH it is also probed (optional: the page's decodeAudioData already proves
//! it plays).
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM_PATH`), `node` and `tests/browser/node_modules`
//! (`scripts/setup-test-deps` installs all three). Without them the test fails when
//! `VOICE_TEST_STRICT=1` and otherwise prints `SKIPPED` and passes.

mod browser_support;

use std::time::Duration;

use browser_support::{prerequisites_present, repo_root, run_node_script};
use voice_server::config::Config;

const NODE_TIMEOUT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_records_everyone_and_a_member_downloads_a_playable_webm_opus_file() {
    let root = repo_root();
    if !prerequisites_present(&root, "browser recording") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let recordings = dir.path().join("recordings");
    let mut config = Config::ephemeral();
    config.recordings = Some(recordings.clone());
    let server = voice_server::spawn(config)
        .await
        .expect("server starts on 127.0.0.1:0");
    let url = server.http_url();

    let summary = run_node_script(&root, "recording.mjs", &[url], NODE_TIMEOUT).await;
    assert_eq!(summary["ok"], true, "summary says not ok: {summary}");
    let rec = &summary["recording"];
    let id = rec["recordingId"].as_str().expect("recording id");
    let file = &rec["file"];
    // The page's own measurements, checked again here.
    assert_eq!(file["ebmlHeader"], "1a45dfa3", "{file}");
    assert!(file["seconds"].as_f64().unwrap_or(0.0) > 5.0, "{file}");
    assert!(
        file["peaks"]["othersOnly"].as_f64().unwrap_or(0.0) > 0.01,
        "{file}"
    );
    assert!(
        file["peaks"]["recorderOnly"].as_f64().unwrap_or(0.0) > 0.01,
        "{file}"
    );
    assert!(
        file["peaks"]["nobody"].as_f64().unwrap_or(1.0) < 0.005,
        "{file}"
    );
    assert_eq!(rec["consent"]["order"][0], "asked", "{rec}");

    // The file on disk.
    let path = recordings.join(format!("{id}.webm"));
    let bytes = std::fs::read(&path).expect("the recording file exists");
    assert!(!bytes.is_empty());
    assert_eq!(&bytes[..4], &[0x1A, 0x45, 0xDF, 0xA3], "EBML header");
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
    assert!(head.contains("webm"), "DocType webm");
    assert!(head.contains("A_OPUS"), "Opus codec");
    assert_eq!(bytes.len() as u64, file["bytes"].as_u64().unwrap_or(0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    if let Ok(out) = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
    {
        let codec = String::from_utf8_lossy(&out.stdout);
        assert!(codec.contains("opus"), "ffprobe says {codec:?}");
    } else {
        eprintln!("ffprobe not installed; the page's decodeAudioData stands in for it");
    }

    server.shutdown().await.expect("server shuts down cleanly");
}
