//! What user-controlled text may look like in a log line: escaped (no newline, control or
//! bidi character can forge or hide a line) and truncated (a 64 KiB frame cannot become a
//! 64 KiB line). Action names are logged only when they are ones the protocol knows.

use voice_domain::protocol::VOICE_ACTIONS;

use crate::actions::{CHAT_ACTIONS, EXECUTOR_ACTIONS, RECORDING_ACTIONS};

/// Longest user-controlled value written to a log, in characters before escaping.
pub const MAX_LOGGED_CHARS: usize = 64;

/// The action name as logged: the name itself when the server knows it, else `"<unknown>"`
/// (an attacker chooses the `action` field; only names from the protocol reach the log).
pub fn action(name: &str) -> &str {
    if EXECUTOR_ACTIONS.contains(&name)
        || CHAT_ACTIONS.contains(&name)
        || VOICE_ACTIONS.contains(&name)
        || RECORDING_ACTIONS.contains(&name)
    {
        name
    } else if name.is_empty() {
        "<none>"
    } else {
        "<unknown>"
    }
}

/// `text` escaped like a Rust string literal's contents (`\n`, `\u{202e}`, `\"` …), cut at
/// [`MAX_LOGGED_CHARS`] characters with `…` appended when it was longer.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LOGGED_CHARS * 2));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_LOGGED_CHARS {
            out.push('…');
            break;
        }
        if c.is_alphanumeric() && !c.is_control() && c.is_ascii()
            || matches!(c, '-' | '_' | '.' | ':' | ' ')
        {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_actions_are_logged_by_name() {
        assert_eq!(action("hello"), "hello");
        assert_eq!(action("createVoiceRoom"), "createVoiceRoom");
        assert_eq!(action("signal"), "signal");
        assert_eq!(
            action("x\n2026-01-01T00:00:00Z  WARN voice_server: forged"),
            "<unknown>"
        );
        assert_eq!(action(""), "<none>");
    }

    #[test]
    fn text_is_escaped_and_truncated() {
        assert_eq!(text("room-1"), "room-1");
        let t = text("a\nb\u{202e}c\"\u{1}");
        assert!(!t.contains('\n') && !t.contains('\u{202e}') && !t.contains('\u{1}'));
        assert!(t.starts_with("a\\nb\\u{202e}c"), "{t}");
        let long = text(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_LOGGED_CHARS + 1);
    }
}
