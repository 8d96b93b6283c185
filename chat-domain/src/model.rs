//! What the chat stores, and the rules for the text people type into it.

use serde::Serialize;
use voice_domain::{ChatRoomId, UserId};

use crate::errors::ChatError;

/// How many messages `getMessages` returns (a store may keep more).
pub const MESSAGE_HISTORY: usize = 100;
/// Longest display or room name, in characters: long enough for real names, short enough
/// that a list of them stays readable.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest chat message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// A chat room as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Its id.
    pub id: ChatRoomId,
    /// Its display name (unique, case-insensitively).
    pub name: String,
    /// Its creator, who approves join requests.
    pub admin: UserId,
}

/// A chat message, as stored and as sent (`message` event, `getMessages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The chat room.
    pub room_id: String,
    /// The author.
    pub user_id: String,
    /// The author's display name when it was sent.
    pub name: String,
    /// The text.
    pub text: String,
    /// When, ms since the Unix epoch.
    pub at: u64,
}

/// A display or room name as typed, trimmed and checked: not empty, at most
/// [`MAX_NAME_CHARS`], no control characters (they would break a list or a log line).
///
/// # Errors
/// [`ChatError::BadRequest`] (empty, control characters), [`ChatError::TooLarge`].
pub fn clean_name(kind: &str, raw: &str) -> Result<String, ChatError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ChatError::BadRequest(format!("{kind} must not be empty")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ChatError::TooLarge(format!(
            "{kind} must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ChatError::BadRequest(format!(
            "{kind} must not contain control characters"
        )));
    }
    Ok(name.to_owned())
}

/// A message text as typed, trimmed and checked: not empty, at most [`MAX_MESSAGE_CHARS`].
///
/// # Errors
/// [`ChatError::BadRequest`] (empty), [`ChatError::TooLarge`].
pub fn clean_text(raw: &str) -> Result<String, ChatError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(ChatError::BadRequest("text must not be empty".into()));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ChatError::TooLarge(format!(
            "text must be at most {MAX_MESSAGE_CHARS} characters"
        )));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(clean_name("name", "  Ann ").unwrap(), "Ann");
        assert_eq!(clean_name("name", " ").unwrap_err().code(), "BAD_REQUEST");
        assert_eq!(
            clean_name("name", &"x".repeat(65)).unwrap_err().code(),
            "TOO_LARGE"
        );
        assert_eq!(
            clean_name("name", "a\u{7}").unwrap_err().code(),
            "BAD_REQUEST"
        );
    }

    #[test]
    fn texts_are_trimmed_and_bounded() {
        assert_eq!(clean_text(" hi ").unwrap(), "hi");
        assert_eq!(clean_text("  ").unwrap_err().code(), "BAD_REQUEST");
        assert_eq!(
            clean_text(&"x".repeat(MAX_MESSAGE_CHARS + 1))
                .unwrap_err()
                .code(),
            "TOO_LARGE"
        );
    }
}
