//! One WebSocket connection: a reader loop that handles requests in order, a writer task that
//! drains the connection's bounded queue, and the clean-up when either side ends (voice
//! disconnect, chat presence).

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};
use voice_domain::protocol::WireError;
use voice_domain::ConnectionId;

use crate::config::RateLimit;
use crate::dispatch::{parse_frame, reply_frame, Dispatcher, Envelope};
use crate::hub::{Hub, Trigger};

/// Largest accepted frame and message, in bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// How long the writer may take to send its close frame before it just closes the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Close codes the server sends.
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
}

/// A token bucket: `burst` frames at once, refilled at `per_second`.
#[derive(Debug)]
pub struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Everything a connection task needs.
#[derive(Clone)]
pub struct ConnectionContext {
    /// Request handling.
    pub dispatcher: Dispatcher,
    /// Outgoing queues.
    pub hub: Hub,
    /// Server shutdown.
    pub shutdown: Trigger,
    /// Per-connection queue size.
    pub queue_capacity: usize,
    /// Per-connection rate limit.
    pub rate_limit: RateLimit,
}

/// Runs one connection to its end.
pub async fn run(ctx: ConnectionContext, socket: WebSocket) {
    let conn = ConnectionId::parse(uuid::Uuid::new_v4().simple().to_string())
        .expect("a uuid is a valid connection id");
    let span = tracing::info_span!("connection", connection_id = %conn);
    run_connection(ctx, socket, conn).instrument(span).await;
}

async fn run_connection(ctx: ConnectionContext, socket: WebSocket, conn: ConnectionId) {
    // Until the clean-up below is done: shutdown waits for it (a clean stop leaves no voice
    // room active for a closed socket).
    let _session = ctx.hub.session();
    info!("connection opened");
    let (rx, kill) = ctx.hub.register(conn.clone(), ctx.queue_capacity);
    let (sink, mut stream) = socket.split();
    let writer =
        tokio::spawn(write_loop(sink, rx, kill.clone(), ctx.shutdown.clone()).in_current_span());
    let mut bucket = Bucket::new(ctx.rate_limit);
    let reason = loop {
        let frame = tokio::select! {
            biased;
            () = kill.wait() => break "dropped: too slow",
            () = ctx.shutdown.wait() => break "server shutting down",
            f = stream.next() => f,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let env = Envelope::default();
                let reply = reply_frame(
                    &env,
                    Err(WireError::bad_request(
                        "binary frames are not supported; send JSON text",
                    )),
                );
                if ctx.hub.send(&conn, reply).is_err() {
                    break "dropped: too slow";
                }
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => break "closed by client",
            Some(Err(e)) => {
                info!(error = %e, "socket error");
                break "socket error";
            }
        };
        let reply = if bucket.take(Instant::now()) {
            ctx.dispatcher.handle(&conn, text.as_str()).await
        } else {
            let env = parse_frame(text.as_str()).map_or_else(|(env, _)| env, |(env, _)| env);
            warn!(action = %env.action, "rate limited");
            reply_frame(
                &env,
                Err(WireError {
                    code: "RATE_LIMITED".into(),
                    message: "too many requests on this connection; slow down and retry".into(),
                    retryable: true,
                }),
            )
        };
        if ctx.hub.send(&conn, reply).is_err() {
            break "dropped: too slow";
        }
    };
    // Order: no more frames to this connection, then it is no longer the user's, then voice
    // hears of the disconnect (so its events go only to live connections).
    ctx.hub.remove(&conn);
    ctx.dispatcher.chat.disconnect(&conn).await;
    match ctx.dispatcher.voice.on_disconnect(&conn).await {
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
    info!(reason, "connection closed");
}

/// At most this many queued messages, or about this many bytes, go out in one write.
const BATCH_MESSAGES: usize = 32;
const BATCH_BYTES: usize = 64 * 1024;

/// Sends `first` and whatever else is already queued (up to [`BATCH_MESSAGES`] /
/// [`BATCH_BYTES`]) with one flush: an event and the reply that follows it, or a burst of
/// relayed candidates, leave in one `write` instead of one system call each. Never waits for
/// messages that are not queued yet.
async fn send_batch(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    rx: &mut mpsc::Receiver<String>,
    first: String,
) -> Result<(), axum::Error> {
    let mut bytes = first.len();
    sink.feed(Message::Text(Utf8Bytes::from(first))).await?;
    for _ in 1..BATCH_MESSAGES {
        if bytes >= BATCH_BYTES {
            break;
        }
        let Ok(text) = rx.try_recv() else { break };
        bytes += text.len();
        sink.feed(Message::Text(Utf8Bytes::from(text))).await?;
    }
    sink.flush().await
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<String>,
    kill: Trigger,
    shutdown: Trigger,
) {
    let (code, reason) = loop {
        tokio::select! {
            biased;
            () = kill.wait() => break (close::POLICY, "too slow: outgoing queue full"),
            () = shutdown.wait() => break (close::GOING_AWAY, "server shutting down"),
            m = rx.recv() => match m {
                Some(text) => {
                    // A client that stops reading blocks this send once the socket's buffers
                    // are full; being dropped or shut down must still end the task, or the
                    // socket (and its buffers) would live as long as the client stays silent.
                    let sent = tokio::select! {
                        biased;
                        () = kill.wait() => return,
                        () = shutdown.wait() => return,
                        r = send_batch(&mut sink, &mut rx, text) => r,
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                None => break (close::NORMAL, "bye"),
            },
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
