//! One WebSocket connection: a reader loop that handles requests in order, a writer task that
//! drains the connection's bounded queue and pings, and the clean-up when either side ends
//! (voice disconnect, chat presence). Every wait has a deadline: `hello` within
//! `hello_timeout`, some frame (a pong at least) within `idle_timeout`, each write within
//! `write_timeout`; missing one closes the connection like any disconnect.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::oneshot;
use tracing::{debug, info, warn, Instrument};
use voice_domain::protocol::WireError;
use voice_domain::ConnectionId;

use crate::adapters::hub::{Hub, Outbox, QueueLimit, Trigger};
use crate::quota::{Bucket, OverBudget, RateLimit, SignUps, UserBudgets};
use voice_executor::{binary_frame_reply, parse_frame, reply_frame, Executor};

use crate::adapters::ports::ServerPorts;

/// Largest accepted frame and message, in bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How long the writer may take to send its close frame before it just closes the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Close codes the server sends.
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// The deadlines and bounds of one connection (from [`crate::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Outgoing queue bound (messages and bytes); over it the client is a slow reader.
    pub queue: QueueLimit,
    /// A write (one batch, or a ping) that has not completed after this long closes the
    /// connection as a slow reader.
    pub write_timeout: Duration,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// Nothing received for this long (pongs included): the connection is closed.
    pub idle_timeout: Duration,
    /// Not identified with `hello` after this long: the connection is closed.
    pub hello_timeout: Duration,
}

/// Frames over the rate limit tolerated in one [`RATE_WINDOW`] before the connection is
/// closed (close 1008): a client that keeps sending after being told to slow down is a flood.
pub const MAX_LIMITED_PER_WINDOW: u32 = 100;

/// The window over which rate-limited frames are counted and logged (once per window).
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Everything a connection task needs.
#[derive(Clone)]
pub struct ConnectionContext {
    /// Request handling: the executor both entrypoints share.
    pub executor: Executor<ServerPorts>,
    /// Outgoing queues.
    pub hub: Hub,
    /// Server shutdown.
    pub shutdown: Trigger,
    /// Per-connection rate limit.
    pub rate_limit: RateLimit,
    /// Per-connection deadlines and queue bounds.
    pub limits: ConnectionLimits,
    /// Frames and bytes per user, across the user's connections.
    pub budgets: Arc<UserBudgets>,
    /// New users per address: each connection's address is recorded here while it is open.
    pub sign_ups: Arc<SignUps>,
}

/// Runs one connection from `peer` to its end.
pub async fn run(ctx: ConnectionContext, socket: WebSocket, peer: Option<IpAddr>) {
    let conn = ConnectionId::parse(uuid::Uuid::new_v4().simple().to_string())
        .expect("a uuid is a valid connection id");
    let span = tracing::info_span!("connection", connection_id = %conn);
    if let Some(ip) = peer {
        ctx.sign_ups.attach(&conn, ip);
    }
    let sign_ups = Arc::clone(&ctx.sign_ups);
    run_connection(ctx, socket, conn.clone())
        .instrument(span)
        .await;
    sign_ups.detach(&conn);
}

/// The close code for a read error: 1009 for a frame over [`MAX_FRAME_BYTES`], 1007 for text
/// that is not UTF-8, none (the socket is gone or broken) otherwise.
fn close_for_read_error(e: axum::Error) -> (Option<(u16, &'static str)>, String) {
    let text = e.to_string();
    let close = match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(inner) => match *inner {
            tungstenite::Error::Capacity(_) => Some((close::TOO_BIG, "frame too large")),
            tungstenite::Error::Utf8(_) => Some((close::INVALID_DATA, "text is not valid UTF-8")),
            _ => None,
        },
        Err(_) => None,
    };
    (close, text)
}

/// Counts rate-limited frames per [`RATE_WINDOW`]: logs the first of each window only.
struct Offences {
    window_start: Instant,
    count: u32,
}

impl Offences {
    /// Records one limited frame; `(log it, disconnect)`.
    fn record(&mut self, now: Instant) -> (bool, bool) {
        if now.saturating_duration_since(self.window_start) >= RATE_WINDOW {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        (self.count == 1, self.count > MAX_LIMITED_PER_WINDOW)
    }
}

async fn run_connection(ctx: ConnectionContext, socket: WebSocket, conn: ConnectionId) {
    // Until the clean-up below is done: shutdown waits for it (a clean stop leaves no voice
    // room active for a closed socket).
    let _session = ctx.hub.session();
    crate::metrics::websockets(1);
    info!("connection opened");
    let limits = ctx.limits;
    let (rx, kill) = ctx.hub.register(conn.clone(), limits.queue);
    let (sink, mut stream) = socket.split();
    let (close_tx, close_rx) = oneshot::channel();
    let writer = tokio::spawn(
        write_loop(
            sink,
            rx,
            kill.clone(),
            ctx.shutdown.clone(),
            close_rx,
            limits,
        )
        .in_current_span(),
    );
    let mut bucket = Bucket::new(ctx.rate_limit);
    let mut offences = Offences {
        window_start: Instant::now(),
        count: 0,
    };
    let opened = tokio::time::Instant::now();
    let mut user: Option<voice_domain::UserId> = None;
    let mut last_seen = opened;
    let (reason, close_with): (&str, Option<(u16, &'static str)>) = loop {
        let hello_due = opened + limits.hello_timeout;
        let idle_due = last_seen + limits.idle_timeout;
        let frame = tokio::select! {
            biased;
            () = kill.wait() => break ("dropped: too slow", None),
            () = ctx.shutdown.wait() => break ("server shutting down", None),
            () = tokio::time::sleep_until(hello_due), if user.is_none() => {
                crate::metrics::rejected("hello_timeout");
                break ("no hello in time", Some((close::POLICY, "identify with hello first")));
            }
            () = tokio::time::sleep_until(idle_due) => {
                crate::metrics::rejected("idle_timeout");
                break ("idle: nothing received in time", Some((close::GOING_AWAY, "idle timeout")));
            }
            f = stream.next() => f,
        };
        last_seen = tokio::time::Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let reply = binary_frame_reply();
                if ctx.hub.send(&conn, reply).is_err() {
                    break ("dropped: too slow", None);
                }
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break ("closed by client", None),
            Some(Err(e)) => {
                let (close, error) = close_for_read_error(e);
                info!(error = %voice_executor::logsafe::text(&error), "socket error");
                if close.is_some() {
                    crate::metrics::rejected("bad_frame");
                }
                break ("socket error", close);
            }
        };
        let now = Instant::now();
        let admitted = if !bucket.take(now) {
            Err("too many requests on this connection; slow down and retry")
        } else if let Some(u) = &user {
            // Only frames that mention the action are parsed here (the executor parses every
            // frame again; a false positive would only cost one more parse).
            let message = text.contains("sendMessage")
                && parse_frame(text.as_str())
                    .map_or_else(|(env, _)| env, |(env, _)| env)
                    .action
                    == "sendMessage";
            ctx.budgets.take(u, text.len(), message, now).map_err(|over| match over {
                OverBudget::Frames => {
                    "too many requests from your account (all your connections together); slow down and retry"
                }
                OverBudget::Bytes => {
                    "too much data from your account (all your connections together); slow down and retry"
                }
                OverBudget::Messages => {
                    "you are sending messages too fast (all your connections together); wait a moment and send again"
                }
            })
        } else {
            Ok(())
        };
        let reply = match admitted {
            Ok(()) => {
                // Boxed: a task is allocated at the size of its largest state, and handling a
                // request (any use case) is far larger than waiting for a frame. Inline, every
                // idle connection would carry that space for its whole life.
                let handled = Box::pin(ctx.executor.handle(&conn, text.as_str())).await;
                if user.is_none() {
                    user = Box::pin(ctx.executor.identity(&conn)).await;
                }
                handled.frame
            }
            Err(message) => {
                crate::metrics::rate_limited();
                let env = parse_frame(text.as_str()).map_or_else(|(env, _)| env, |(env, _)| env);
                let (log, disconnect) = offences.record(now);
                if disconnect {
                    crate::metrics::rejected("rate_limit_abuse");
                    warn!(
                        limited = offences.count,
                        "closing: kept sending far over the rate limit"
                    );
                    break (
                        "flooding over the rate limit",
                        Some((close::POLICY, "too many requests")),
                    );
                }
                if log {
                    warn!(
                        action = %voice_executor::logsafe::action(&env.action),
                        reason = message,
                        "rate limited; further frames over the limit in the next 10 s are refused without a log line"
                    );
                }
                reply_frame(
                    &env,
                    Err(WireError {
                        code: "RATE_LIMITED".into(),
                        message: message.into(),
                        retryable: true,
                    }),
                )
            }
        };
        if ctx.hub.send(&conn, reply).is_err() {
            break ("dropped: too slow", None);
        }
    };
    if let Some(close) = close_with {
        let _ = close_tx.send(close);
    } else {
        drop(close_tx);
    }
    // Order: no more frames to this connection, then it is no longer the user's, then voice
    // hears of the disconnect (so its events go only to live connections).
    ctx.hub.remove(&conn);
    match Box::pin(ctx.executor.disconnect(&conn)).await {
        Ok(report) if !report.rooms_left.is_empty() => {
            info!(
                rooms = report.rooms_left.len(),
                "left voice rooms on disconnect"
            );
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "disconnect clean-up failed; the sweep will finish it"),
    }
    // The writer has flushed what was queued (its queue closed with the hub entry) or was told
    // to stop; give it a moment to send its close frame.
    let mut writer = writer;
    if tokio::time::timeout(Duration::from_secs(2), &mut writer)
        .await
        .is_err()
    {
        debug!("writer did not finish in time");
        writer.abort();
    }
    crate::metrics::websockets(-1);
    info!(reason, "connection closed");
}

/// At most this many queued messages, or about this many bytes, go out in one write.
const BATCH_MESSAGES: usize = 32;
const BATCH_BYTES: usize = 64 * 1024;

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Sends `first` and whatever else is already queued (up to [`BATCH_MESSAGES`] /
/// [`BATCH_BYTES`]) with one flush: an event and the reply that follows it, or a burst of
/// relayed candidates, leave in one `write` instead of one system call each. Never waits for
/// messages that are not queued yet.
async fn send_batch(sink: &mut Sink, rx: &mut Outbox, first: String) -> Result<(), axum::Error> {
    let mut bytes = first.len();
    sink.feed(Message::Text(Utf8Bytes::from(first))).await?;
    for _ in 1..BATCH_MESSAGES {
        if bytes >= BATCH_BYTES {
            break;
        }
        let Some(text) = rx.try_recv() else { break };
        bytes += text.len();
        sink.feed(Message::Text(Utf8Bytes::from(text))).await?;
    }
    sink.flush().await
}

/// What ended a write.
enum Wrote {
    Done,
    Failed,
    /// The client did not take the bytes in time: a slow reader.
    TimedOut,
}

async fn timed<F>(limit: Duration, write: F) -> Wrote
where
    F: std::future::Future<Output = Result<(), axum::Error>>,
{
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(())) => Wrote::Done,
        Ok(Err(_)) => Wrote::Failed,
        Err(_) => Wrote::TimedOut,
    }
}

async fn write_loop(
    mut sink: Sink,
    mut rx: Outbox,
    kill: Trigger,
    shutdown: Trigger,
    mut close_rx: oneshot::Receiver<(u16, &'static str)>,
    limits: ConnectionLimits,
) {
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut close_open = true;
    let (code, reason) = loop {
        let wrote = tokio::select! {
            biased;
            () = kill.wait() => break (close::POLICY, "too slow: outgoing queue full"),
            () = shutdown.wait() => break (close::GOING_AWAY, "server shutting down"),
            c = &mut close_rx, if close_open => match c {
                Ok(c) => break c,
                Err(_) => {
                    close_open = false;
                    continue;
                }
            },
            _ = ping.tick() => {
                let ping = sink.send(Message::Ping(axum::body::Bytes::new()));
                tokio::select! {
                    biased;
                    () = kill.wait() => return,
                    () = shutdown.wait() => return,
                    w = timed(limits.write_timeout, ping) => w,
                }
            }
            m = rx.recv() => match m {
                Some(text) => {
                    // A client that stops reading blocks this send once the socket's buffers
                    // are full; being dropped, shut down or timing out must still end the
                    // task, or the socket (and its buffers) would live as long as the client
                    // stays silent.
                    tokio::select! {
                        biased;
                        () = kill.wait() => return,
                        () = shutdown.wait() => return,
                        w = timed(limits.write_timeout, send_batch(&mut sink, &mut rx, text)) => w,
                    }
                }
                None => break (close::NORMAL, "bye"),
            },
        };
        match wrote {
            Wrote::Done => {}
            Wrote::Failed => return,
            Wrote::TimedOut => {
                crate::metrics::slow_reader_closed();
                warn!(
                    queued_bytes = rx.queued_bytes(),
                    timeout_secs = limits.write_timeout.as_secs(),
                    "closing a slow reader: a write made no progress in time"
                );
                // The reader loop sees this and runs the disconnect clean-up.
                kill.fire();
                return;
            }
        }
    };
    // The close frame is a courtesy: a client that does not read does not get to hold it up.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await;
        let _ = sink.close().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let mut b = Bucket::new(RateLimit {
            burst: 3,
            per_second: 10.0,
        });
        let t0 = Instant::now();
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(150)));
        assert!(!b.take(t0 + Duration::from_millis(150)));
    }
}
