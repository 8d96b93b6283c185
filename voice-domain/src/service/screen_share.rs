//! The screen-share use cases (`startScreenShare`, `stopScreenShare`, `setScreenSharePolicy`),
//! in their own file so that the rules of [`crate::screen`] read in one place. They follow the
//! recording use cases: the caller and room first, then whether the caller administers the chat
//! room, then one compare-and-set transition whose events every member hears.

use tracing::info;

use super::{acting_on, ExpectChanged, GateError, Lookup, ModifyError, VoiceService};
use crate::errors::{
    AccessError, ScreenSharePolicyError, StartScreenShareError, StopScreenShareError,
};
use crate::ids::{ConnectionId, VoiceRoomId};
use crate::ports::{Clock, Ports};
use crate::room::{TransitionError, VoiceRoom};
use crate::screen::ScreenSharePolicy;

impl<P: Ports> VoiceService<P> {
    /// `startScreenShare`: a connected participant on its current connection asks to share its
    /// screen, before its page calls `getDisplayMedia`. The room's policy decides (`anyone`, or
    /// `hosts`: the master and the chat room's admin); one sharer at a time. Every member hears
    /// `screenShareStarted`, and receivers show a screen track large only from the sharer.
    ///
    /// # Errors
    /// [`StartScreenShareError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn start_screen_share(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceRoom, StartScreenShareError> {
        let (user, room) = self
            .caller_and_room(caller, voice_room)
            .await
            .map_err(|e| match e {
                Lookup::NotIdentified => AccessError::NotIdentified.into(),
                Lookup::NotFound => StartScreenShareError::VoiceRoomNotFound,
                Lookup::Dependency(d) => StartScreenShareError::Dependency(d),
            })?;
        let membership = match self.gate(&user, room.chat_room()).await {
            Ok(m) => m,
            Err(GateError::Access(a)) => return Err(a.into()),
            Err(GateError::Dependency(d)) => return Err(d.into()),
        };
        let now = self.ports.clock.now();
        let (room, events) = self
            .modify(voice_room, |r| {
                acting_on(r, &user, caller)?;
                r.start_screen_share(&user, membership.is_admin, now)
                    .map(|ev| (!ev.is_empty()).then_some(ev))
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => StartScreenShareError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => StartScreenShareError::Ended,
                ModifyError::Rejected(TransitionError::NotAllowedToShare) => {
                    StartScreenShareError::NotAllowed
                }
                ModifyError::Rejected(TransitionError::ScreenShareBusy) => {
                    StartScreenShareError::Busy
                }
                ModifyError::Rejected(_) => StartScreenShareError::NotInVoice,
                ModifyError::Dependency(d) => StartScreenShareError::Dependency(d),
            })?;
        if let Some(events) = events {
            info!(user_id = %user, "screen share started");
            self.publish(events).await;
        }
        Ok(room)
    }

    /// `stopScreenShare`: the sharer (its page's button, or the browser's own "stop sharing"),
    /// the master or the chat room's admin stops the running share; every member hears
    /// `screenShareStopped`.
    ///
    /// # Errors
    /// [`StopScreenShareError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn stop_screen_share(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
    ) -> Result<VoiceRoom, StopScreenShareError> {
        let (user, room) = self
            .caller_and_room(caller, voice_room)
            .await
            .map_err(|e| match e {
                Lookup::NotIdentified => StopScreenShareError::NotIdentified,
                Lookup::NotFound => StopScreenShareError::VoiceRoomNotFound,
                Lookup::Dependency(d) => StopScreenShareError::Dependency(d),
            })?;
        let is_admin = self.is_admin(room.chat_room(), &user).await?;
        let (room, events) = self
            .modify(voice_room, |r| {
                // A participant's replaced connection may no longer act for it.
                if !is_admin && acting_on(r, &user, caller).is_err() {
                    return Err(TransitionError::NotAllowedToShare);
                }
                r.stop_screen_share(&user, is_admin).map(Some)
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => StopScreenShareError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => StopScreenShareError::Ended,
                ModifyError::Rejected(TransitionError::NotSharing) => {
                    StopScreenShareError::NotSharing
                }
                ModifyError::Rejected(_) => StopScreenShareError::NotAllowed,
                ModifyError::Dependency(d) => StopScreenShareError::Dependency(d),
            })?
            .expect_changed();
        info!(user_id = %user, "screen share stopped");
        self.publish(events).await;
        Ok(room)
    }

    /// `setScreenSharePolicy`: the master (from its current connection) or the chat room's
    /// admin decides who may share a screen; every member hears `screenSharePolicyChanged`,
    /// and a share the new policy forbids stops (`screenShareStopped`, `policyChanged`).
    ///
    /// # Errors
    /// [`ScreenSharePolicyError`].
    #[tracing::instrument(skip(self), fields(connection_id = %caller, voice_room_id = %voice_room))]
    pub async fn set_screen_share_policy(
        &self,
        caller: &ConnectionId,
        voice_room: &VoiceRoomId,
        policy: ScreenSharePolicy,
    ) -> Result<VoiceRoom, ScreenSharePolicyError> {
        let (user, room) = self
            .caller_and_room(caller, voice_room)
            .await
            .map_err(|e| match e {
                Lookup::NotIdentified => ScreenSharePolicyError::NotIdentified,
                Lookup::NotFound => ScreenSharePolicyError::VoiceRoomNotFound,
                Lookup::Dependency(d) => ScreenSharePolicyError::Dependency(d),
            })?;
        let is_admin = self.is_admin(room.chat_room(), &user).await?;
        // Whether the sharer as read now administers the chat room; a sharer that changed
        // between this read and the write is treated as not the admin (the stricter reading).
        let sharer = room.screen_share().map(|s| s.by.clone());
        let sharer_is_admin = match &sharer {
            Some(s) => self.is_admin(room.chat_room(), s).await?,
            None => false,
        };
        let (room, events) = self
            .modify(voice_room, |r| {
                // The master's old connection (replaced by a resume) no longer decides.
                if !is_admin && acting_on(r, &user, caller).is_err() {
                    return Err(TransitionError::NotAllowedToShare);
                }
                let same_sharer = r.screen_share().map(|s| &s.by) == sharer.as_ref();
                r.set_screen_share_policy(&user, is_admin, policy, sharer_is_admin && same_sharer)
                    .map(|ev| (!ev.is_empty()).then_some(ev))
            })
            .await
            .map_err(|e| match e {
                ModifyError::NotFound => ScreenSharePolicyError::VoiceRoomNotFound,
                ModifyError::Rejected(TransitionError::Ended) => ScreenSharePolicyError::Ended,
                ModifyError::Rejected(_) => ScreenSharePolicyError::NotAllowed,
                ModifyError::Dependency(d) => ScreenSharePolicyError::Dependency(d),
            })?;
        if let Some(events) = events {
            info!(user_id = %user, policy = policy.as_str(), "screen-share policy set");
            self.publish(events).await;
        }
        Ok(room)
    }
}
