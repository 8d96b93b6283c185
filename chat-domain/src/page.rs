//! Pages of the lists a client reads (`listRooms`, `listMembers`, `getMessages`) and their
//! cursors.
//!
//! Why pages: without them `listRooms` returned every room (558 KiB for 2 400 rooms in the
//! issue-13 report) with two store queries per room, so one user looping it slowed everyone
//! (a bystander's p99 went from 24 ms to 876 ms). Each page is now at most a configured number
//! of entries, read by one store query (no query per entry), and fits in API Gateway's 128 KB
//! WebSocket message with room to spare.
//!
//! A cursor is opaque to clients: `<kind>.<hex of the store's position>`. It is a *position*,
//! not a capability: whoever edits one into another valid position only reads a page they could
//! read anyway (every read still passes its gate), so it carries no MAC. A cursor of the wrong
//! kind, or one that does not decode, is refused as `BAD_REQUEST` in plain words.

use voice_domain::ports::MemberState;
use voice_domain::UserId;

use crate::errors::ChatError;
use crate::model::{ChatMessage, RoomRecord};

/// Default rooms per `listRooms` page ([`ChatLimits::rooms_page`](crate::ChatLimits)).
pub const ROOMS_PAGE: usize = 50;
/// Default members per `listMembers` page ([`ChatLimits::members_page`](crate::ChatLimits)).
pub const MEMBERS_PAGE: usize = 100;
/// The most entries any page may hold, whatever the configuration or the request says: 100
/// room or member views of the longest names stay under ~80 KB of JSON, well within API
/// Gateway's 128 KB message, and DynamoDB's `BatchGetItem` reads 100 keys at once.
pub const MAX_PAGE: usize = 100;
/// The longest cursor accepted (a store position is an id or a number; this is generous).
const MAX_CURSOR_CHARS: usize = 1024;

/// Which list a cursor belongs to, so that a cursor of one list is not taken by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// `listRooms`.
    Rooms,
    /// `listMembers`.
    Members,
    /// `getMessages` (older history).
    Messages,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            Self::Rooms => "r",
            Self::Members => "m",
            Self::Messages => "h",
        }
    }
}

/// One page of a list as a store reads it, and the store's position after it (`None` when
/// this is the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries, in the list's order.
    pub items: Vec<T>,
    /// Where the next page starts, in the store's own terms; `None` on the last page.
    pub next: Option<String>,
}

/// A room with what `listRooms` shows about it for one viewer, read with the room in the same
/// query (no query per room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub record: RoomRecord,
    /// Its approved members (the admin included).
    pub member_count: usize,
    /// The viewer's state in it.
    pub my_state: MemberState,
}

/// A member or requester with what `listMembers` shows, read in the page's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    /// Who.
    pub user: UserId,
    /// Approved or pending.
    pub state: MemberState,
    /// Their display name (`None` for a user the store never saw say `hello`).
    pub name: Option<String>,
    /// Whether they have an open connection.
    pub online: bool,
}

/// A stored message with its position in the room's history (increasing with time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its sequence number in the room: later messages have larger ones.
    pub seq: u64,
    /// The message.
    pub message: ChatMessage,
}

/// The wire cursor for a store `position` in the list `kind`.
pub fn encode_cursor(kind: CursorKind, position: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(2 + 2 * position.len());
    out.push_str(kind.tag());
    out.push('.');
    for b in position.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The store position in a wire cursor of the list `kind`.
///
/// # Errors
/// [`ChatError::BadRequest`] for a cursor that is too long, of another list, or damaged.
pub fn decode_cursor(kind: CursorKind, cursor: &str) -> Result<String, ChatError> {
    let bad = || {
        ChatError::BadRequest(
            "cursor: this is not a cursor this server gave out for this list (it may be \
             damaged or from another list); ask again without a cursor to start from the \
             first page"
                .into(),
        )
    };
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(bad());
    }
    let hex = cursor
        .strip_prefix(kind.tag())
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(bad)?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The page size for a request: what the client asked (if anything), at most the configured
/// size, at least 1, never above [`MAX_PAGE`].
pub fn page_size(asked: Option<usize>, configured: usize) -> usize {
    let cap = configured.clamp(1, MAX_PAGE);
    asked.map_or(cap, |a| a.clamp(1, cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_lists_and_damage() {
        for pos in ["", "room-1", "1700000000000.room-1", "name#caf\u{e9}"] {
            let c = encode_cursor(CursorKind::Rooms, pos);
            if pos.is_empty() {
                assert!(decode_cursor(CursorKind::Rooms, &c).is_err());
            } else {
                assert_eq!(decode_cursor(CursorKind::Rooms, &c).unwrap(), pos);
            }
        }
        let c = encode_cursor(CursorKind::Members, "u-1");
        let e = decode_cursor(CursorKind::Rooms, &c).unwrap_err();
        assert_eq!(e.code(), "BAD_REQUEST");
        assert!(e.to_string().contains("without a cursor"), "{e}");
        for damaged in [
            "m.",
            "m.7",
            "m.zz",
            "m.ff",
            "x",
            "",
            "m-7531",
            &"m.00".repeat(600),
        ] {
            assert_eq!(
                decode_cursor(CursorKind::Members, damaged)
                    .unwrap_err()
                    .code(),
                "BAD_REQUEST",
                "{damaged:?}"
            );
        }
    }

    #[test]
    fn page_sizes_are_clamped() {
        assert_eq!(page_size(None, 50), 50);
        assert_eq!(page_size(Some(10), 50), 10);
        assert_eq!(page_size(Some(0), 50), 1);
        assert_eq!(page_size(Some(10_000), 50), 50);
        assert_eq!(page_size(None, 10_000), MAX_PAGE);
        assert_eq!(page_size(None, 0), 1);
    }
}
