//! What runs around the requests for the life of the process: keeping the voice rooms of a
//! previous process at start-up, the periodic sweep, and waiting for a stop signal.

use std::future::Future;
use std::sync::Arc;

use tracing::{info, warn};
use voice_adapters_memory::MemoryChannels;
use voice_domain::ports::{ChannelTags, VoiceRoomStore as _};
use voice_domain::VoiceService;

use crate::adapters::hub::Trigger;
use crate::adapters::ports::ServerPorts;

/// Voice rooms stored as active by a previous process (SQLite) lost every participant's
/// connection with it, and this process has no connection yet. A restart must be a blip, not the
/// end of the calls: every participant becomes reconnecting as of now, so those who come back
/// within the reconnect grace resume into the same voice room, and the sweep removes the others
/// (ending rooms nobody came back to). Runs before the first connection is served; a failure is
/// logged and left to the periodic sweep, which marks the participants of dead connections
/// reconnecting in turn.
pub(crate) async fn keep_rooms_of_previous_process(
    voice: &VoiceService<ServerPorts>,
    relay_channels: &MemoryChannels,
) {
    if voice.config().reconnect_grace.is_zero() {
        // No resume: the sweep ends the rooms at once (reason `abandoned`, channels deleted),
        // since none of their participants' connections is known to this process.
        match voice.sweep().await {
            Ok(r) if r.rooms_ended.is_empty() => {}
            Ok(r) => info!(
                rooms_ended = r.rooms_ended.len(),
                "ended voice rooms left active by the previous process"
            ),
            Err(e) => {
                warn!(error = %e, "could not end voice rooms left by the previous process; the periodic sweep will retry")
            }
        }
        return;
    }
    // The relay's channels lived in the previous process's memory: re-register those of the
    // rooms kept, so that participants resume on their own channel (the mesh plan is unchanged).
    match voice.ports().store.list_active().await {
        Ok(rooms) => {
            for room in &rooms {
                for p in room.participants() {
                    relay_channels.adopt(
                        p.channel.clone(),
                        ChannelTags {
                            chat_room: room.chat_room().clone(),
                            voice_room: room.id().clone(),
                            owner: p.user.clone(),
                        },
                    );
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "could not list the voice rooms of the previous process; the periodic sweep will end them");
            return;
        }
    }
    match voice.restarted().await {
        Ok(kept) if kept.is_empty() => {}
        Ok(kept) => info!(
            rooms = kept.len(),
            "voice rooms of the previous process kept; their participants may resume"
        ),
        Err(e) => {
            warn!(error = %e, "could not keep the voice rooms of the previous process; the periodic sweep will handle them")
        }
    }
}

/// How often to sweep: the configured interval, but at least four times per reconnect grace, so
/// that a participant who does not come back leaves at most a quarter-grace after it (never
/// more often than every 100 ms).
pub(crate) fn sweep_every(
    interval: std::time::Duration,
    grace: std::time::Duration,
) -> std::time::Duration {
    if grace.is_zero() {
        return interval;
    }
    interval
        .min(grace / 4)
        .max(std::time::Duration::from_millis(100))
}

pub(crate) async fn sweep_loop(
    voice: Arc<VoiceService<ServerPorts>>,
    every: std::time::Duration,
    stop: Trigger,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.wait() => return,
            _ = tick.tick() => {}
        }
        match voice.sweep().await {
            Ok(r)
                if r.rooms_ended.is_empty()
                    && r.participants_removed == 0
                    && r.participants_reconnecting == 0
                    && r.channels_deleted == 0
                    && r.failures == 0 => {}
            Ok(r) => info!(
                rooms_ended = r.rooms_ended.len(),
                participants_removed = r.participants_removed,
                participants_reconnecting = r.participants_reconnecting,
                channels_deleted = r.channels_deleted,
                failures = r.failures,
                "sweep"
            ),
            Err(e) => warn!(error = %e, "sweep failed"),
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers now, and returns a future that completes on
/// either. Installing them eagerly (in `serve`, before the storage is opened and long before
/// "voice-server listening" is logged) matters: tokio only installs a handler when its stream
/// is created, and a SIGTERM that arrived before would take the default action and kill the
/// process without a clean stop (a supervisor that stops the server as soon as it listens hit
/// this).
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    #[cfg(unix)]
    return async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(int) => info!("SIGINT received"),
            () = wait(term) => info!("SIGTERM received"),
        }
    };
    #[cfg(not(unix))]
    return async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        info!("SIGINT received");
    };
}
