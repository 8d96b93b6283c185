//! What the chat stores, and the rules for the text people type into it.

use serde::Serialize;
use unicode_normalization::UnicodeNormalization;
use voice_domain::{ChatRoomId, UserId};

use crate::errors::ChatError;

/// How many messages `getMessages` returns (a store may keep more).
pub const MESSAGE_HISTORY: usize = 100;
/// The default most bytes of messages (as JSON, escapes included) one `getMessages` reply
/// carries (`ChatLimits::history_bytes`): the newest messages that fit. Without it 100 messages of 2 000 characters that JSON
/// escapes to 6 bytes each make a 1.2 MB reply, which one socket can ask for again and again
/// (issue 13, finding 1). 96 KiB holds the full 100 messages of ordinary chat and keeps the
/// reply, envelope included, under API Gateway's 128 KB message limit on AWS.
pub const MESSAGE_HISTORY_BYTES: usize = 96 * 1024;
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

/// Whether `c` shows nothing (or rearranges what follows) where a name is displayed: Unicode's
/// format characters (general category Cf: zero-width space/joiners, bidi embeddings,
/// overrides and isolates, soft hyphen, word joiner, BOM, tags), the Hangul and halfwidth
/// fillers that render as blanks, the Mongolian vowel separator, the combining grapheme joiner
/// and the variation selectors. With them "victim" and "victim\u{200B}" look the same, and
/// U+202E turns "evil\u{202E}txt.exe" into what looks like another name.
///
/// The Cf ranges follow UnicodeData.txt (Unicode 15.1).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{06DD}' | '\u{070F}' | '\u{08E2}'
        | '\u{115F}' | '\u{1160}' | '\u{180E}' | '\u{3164}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{110BD}' | '\u{110CD}' | '\u{E0001}'
        | '\u{0600}'..='\u{0605}'
        | '\u{0890}'..='\u{0891}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0020}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// The key under which chat room names are unique: two names with the same key are "the same
/// name". Case does not count ("Team" = "team"), and neither do look-alike characters from
/// other scripts or widths: every non-ASCII character is replaced by its prototype from
/// Unicode's compatibility form when that is ASCII (full-width "Ｔｅａｍ" is "Team"), else by
/// its prototype from Unicode's confusables table (UTS #39 skeleton: "Тeam" with a Cyrillic
/// Т is "Team"), so a look-alike cannot pose as the real room.
///
/// Then, on the lower-cased result, the ASCII look-alikes of common fonts are folded
/// ([`fold_ascii_look_alikes`]): "rn" is "m", "I", "l", "1" and "|" are one letter, "0" is
/// "o" (issue 13 finding 9: "Modern" and "rnodern", "Hall" and "HaII" looked the same). The
/// choice, documented in SECURITY.md: case-insensitive uniqueness and "I" = "l" together force
/// "i" = "l" (lower-case "i" is capital "I"), so "mail" and "mall" are the same name too. A
/// false clash costs a creator another name; a false distinction lets someone pose as a room.
/// Rooms stored before this rule keep the key they were stored with.
///
/// Every store makes room names unique by this key; none has its own rule.
pub fn room_name_key(name: &str) -> String {
    if name.is_ascii() {
        return fold_ascii_look_alikes(&name.to_lowercase());
    }
    let mut folded = String::with_capacity(name.len());
    let mut buf = [0u8; 4];
    for c in name.chars() {
        if c.is_ascii() {
            folded.push(c);
            continue;
        }
        // Width and compatibility forms first ("Ｔ" is "T"), so that a character with an
        // ASCII equivalent folds to exactly that; the rest to their confusable prototype.
        let compatible: String = std::iter::once(c).nfkc().collect();
        if compatible.is_ascii() {
            folded.push_str(&compatible);
        } else {
            folded.extend(unicode_security::skeleton(c.encode_utf8(&mut buf)));
        }
    }
    fold_ascii_look_alikes(&folded.to_lowercase())
}

/// Folds the ASCII look-alikes of a lower-cased name into one prototype each: "rn" → "m";
/// "i", "l", "1", "|" → "l"; "0" → "o". Left to right, one pass ("rrn" is "rm").
pub fn fold_ascii_look_alikes(lower: &str) -> String {
    let mut out = String::with_capacity(lower.len());
    let mut chars = lower.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            'r' if chars.peek() == Some(&'n') => {
                chars.next();
                out.push('m');
            }
            'i' | 'l' | '1' | '|' => out.push('l'),
            '0' => out.push('o'),
            other => out.push(other),
        }
    }
    out
}

/// A display or room name as typed, trimmed and checked: not empty, at most
/// [`MAX_NAME_CHARS`], no control characters (they would break a list or a log line) and no
/// invisible or bidi-control characters ([`is_invisible`]: they make two names look alike).
///
/// # Errors
/// [`ChatError::BadRequest`] (empty, control or invisible characters), [`ChatError::TooLarge`].
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
    if let Some(c) = name.chars().find(|c| is_invisible(*c)) {
        return Err(ChatError::BadRequest(format!(
            "{kind} must not contain invisible or text-direction characters (found U+{:04X})",
            u32::from(c)
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
    fn room_name_keys_fold_case_and_look_alikes_but_keep_ascii() {
        assert_eq!(room_name_key("Team"), "team");
        assert_eq!(room_name_key("Modern"), room_name_key("rnodern"));
        assert_eq!(room_name_key("Hall"), room_name_key("HaII"));
        assert_eq!(room_name_key("Hall"), room_name_key("Ha11"));
        assert_eq!(room_name_key("O0ps"), room_name_key("oops"));
        assert_eq!(
            room_name_key("\u{0421}orn"),
            room_name_key("com"),
            "after skeleton"
        );
        assert_ne!(room_name_key("Team A"), room_name_key("Team B"));
        assert_eq!(room_name_key("\u{0422}eam"), "team", "Cyrillic capital Te");
        assert_eq!(
            room_name_key("p\u{0430}yp\u{0430}l"),
            room_name_key("PayPal")
        );
        assert_eq!(
            room_name_key("\u{FF34}\u{FF45}\u{FF41}\u{FF4D}"),
            "team",
            "full width"
        );
        assert_eq!(
            room_name_key("room2"),
            "room2",
            "other ASCII digits are kept"
        );
        assert_ne!(room_name_key("Team A"), room_name_key("Team B"));
        assert_ne!(
            room_name_key("Caf\u{E9}"),
            room_name_key("Cafe"),
            "accents count"
        );
    }

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
    fn names_that_would_look_like_another_are_refused() {
        for sneaky in [
            "victim\u{200B}",
            "vic\u{200D}tim",
            "\u{3164}",
            "a\u{3164}b",
            "evil\u{202E}txt.exe",
            "\u{2066}x\u{2069}",
            "soft\u{00AD}hyphen",
            "bom\u{FEFF}",
            "tag\u{E0041}",
            "vs\u{FE0F}",
        ] {
            let e = clean_name("name", sneaky).unwrap_err();
            assert_eq!(e.code(), "BAD_REQUEST", "{sneaky:?}");
            assert!(e.to_string().contains("U+"), "{e}");
        }
        // Real names in many scripts, with spaces, accents and emoji, still pass.
        for fine in [
            "Zoë",
            "José María",
            "李小龍",
            "محمد",
            "Ольга",
            "Sam 🎧",
            "O'Brien-Smith",
        ] {
            assert_eq!(clean_name("name", fine).unwrap(), fine);
        }
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
