//! What the real-browser tests (`browser.rs`, `browser_resilience.rs`) share: where the repo,
//! Chromium and Node are, and the TEAM rule for missing prerequisites (fail under
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
