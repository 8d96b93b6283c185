//! Screen sharing as a rule of the domain: the room's policy (who may share), the current
//! sharer, and why a share stopped.
//!
//! The media itself flows peer to peer (the sharer's browser adds a screen track to its
//! existing links); the domain decides who may share, tells every member of the chat room who
//! shares, and ends the share when its sharer leaves, drops or the room ends. Since media does
//! not pass through any server, the receivers' pages enforce the announced state: they show a
//! screen track large only from the announced sharer.
//!
//! Rules, in one place:
//! - the room's [`ScreenSharePolicy`] says who may share: `anyone` in the room (the default),
//!   or `hosts` (the voice room's master and the chat room's admin only);
//! - the master or the chat room's admin sets the policy; tightening it to `hosts` stops a
//!   share by anyone else at once;
//! - one sharer at a time per room: in a full mesh a sharer encodes and uploads its screen once
//!   per peer, so two shares double every receiver's download and decoding for a second "large"
//!   view nobody can watch at the same time as the first (Zoom's and Meet's default too);
//!   a second sharer is refused (`SCREEN_SHARE_BUSY`) until the first stops;
//! - the sharer must be a connected participant on its current connection (the browser that
//!   shares must be in the mesh);
//! - the sharer, the master and the chat room's admin may stop it;
//! - it stops by itself when the sharer leaves, its connection drops, it resumes from another
//!   connection (the old tab was sharing, the new one is not), or the room ends.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;
use crate::time::Timestamp;

/// Who may share a screen in a voice room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScreenSharePolicy {
    /// Any participant (the default, and what rooms stored before the policy existed read as).
    #[default]
    Anyone,
    /// Only the voice room's master and the chat room's admin (a talk, a class).
    Hosts,
}

impl ScreenSharePolicy {
    /// Whether someone who is (or is not) the master or the chat room's admin may share.
    pub fn allows(self, is_host: bool) -> bool {
        match self {
            Self::Anyone => true,
            Self::Hosts => is_host,
        }
    }

    /// The wire name: `anyone` or `hosts`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anyone => "anyone",
            Self::Hosts => "hosts",
        }
    }

    /// Whether this is the default (so that stores and views may leave it out).
    pub fn is_default(&self) -> bool {
        *self == Self::Anyone
    }
}

/// The screen share running in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScreenShare {
    /// Who shares (whose screen track receivers show large).
    pub by: UserId,
    /// Since when.
    pub since: Timestamp,
}

/// Why a screen share stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ScreenShareStopReason {
    /// The sharer (from the page or the browser's own "stop sharing"), the master or the chat
    /// room's admin stopped it.
    Stopped {
        /// Who.
        by: UserId,
    },
    /// The sharer left the voice room.
    SharerLeft,
    /// The sharer's connection dropped (or it resumed from another tab): its browser is no
    /// longer known to be sharing.
    SharerDisconnected,
    /// The policy became `hosts` and the sharer is not one.
    PolicyChanged,
    /// The voice room ended.
    RoomEnded,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_speaks_its_wire_names_and_defaults_to_anyone() {
        assert_eq!(ScreenSharePolicy::default(), ScreenSharePolicy::Anyone);
        for p in [ScreenSharePolicy::Anyone, ScreenSharePolicy::Hosts] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!(serde_json::from_str::<ScreenSharePolicy>("\"everyone\"").is_err());
        assert!(ScreenSharePolicy::Anyone.allows(false));
        assert!(!ScreenSharePolicy::Hosts.allows(false));
        assert!(ScreenSharePolicy::Hosts.allows(true));
    }
}
