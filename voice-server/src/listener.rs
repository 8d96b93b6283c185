//! The accept loop (instead of `axum::serve`): every accepted TCP connection is counted against
//! a global and a per-IP cap (over either: a plain `503` and close, before any upgrade), gets
//! TCP_NODELAY, and is served by hyper's HTTP/1 connection with a header-read deadline (which
//! also closes bare and idle keep-alive connections). A WebSocket keeps its connection's slot
//! until it closes: the slot travels inside the upgraded I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::adapters::hub::Trigger;

/// The caps and deadline of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_per_ip: usize,
    /// Time to receive a whole request head (and to keep an idle HTTP connection).
    pub header_read_timeout: Duration,
}

/// Counts open connections, in total and per IP address.
#[derive(Clone, Default)]
pub struct Slots {
    inner: Arc<Mutex<SlotCounts>>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_connections` already.
    Full,
    /// That address holds `max_per_ip` already.
    PerIp,
}

impl Refusal {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Full => "max_connections",
            Self::PerIp => "max_connections_per_ip",
        }
    }
}

/// One open connection's place in [`Slots`]; freed on drop.
pub struct Slot {
    slots: Slots,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
        crate::metrics::connections(-1);
    }
}

impl Slots {
    /// Takes a slot for `ip` if both caps allow.
    ///
    /// # Errors
    /// [`Refusal`] naming the cap.
    pub fn take(&self, ip: IpAddr, limits: &ListenLimits) -> Result<Slot, Refusal> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= limits.max_connections {
            return Err(Refusal::Full);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        c.total += 1;
        crate::metrics::connections(1);
        Ok(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

/// A TCP stream holding its [`Slot`]: wherever the stream goes (into a WebSocket after an
/// upgrade) the slot goes with it, and it is freed when the socket is closed.
pub struct SlottedStream {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for SlottedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SlottedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The body of the `503` sent to a connection over a cap.
const BUSY_BODY: &str =
    r#"{"code":"TOO_MANY_CONNECTIONS","message":"too many open connections; try again later"}"#;

async fn refuse(mut stream: TcpStream, refusal: Refusal, peer: SocketAddr) {
    crate::metrics::rejected(refusal.label());
    // One line per refusal would let a flood of connections flood the log too.
    debug!(%peer, reason = refusal.label(), "connection refused: over a connection cap");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-content-type-options: nosniff\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BUSY_BODY}",
        BUSY_BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The IP address a request came from (a request extension set by [`serve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIp(pub IpAddr);

/// Accepts and serves connections with `app` until `stop` fires; then stops accepting and
/// asks every HTTP connection to finish (WebSockets are closed by their own tasks).
pub async fn serve(listener: TcpListener, app: axum::Router, limits: ListenLimits, stop: Trigger) {
    let slots = Slots::default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut last_accept_error: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.wait() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: log at most once a second, and back off
                // so the loop does not spin.
                let now = tokio::time::Instant::now();
                if last_accept_error.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                {
                    warn!(error = %e, "accept error (raise the file descriptor limit or lower --max-connections)");
                    last_accept_error = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match slots.take(peer.ip(), &limits) {
            Ok(s) => s,
            Err(refusal) => {
                tokio::spawn(refuse(stream, refusal, peer));
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            // TCP_NODELAY: a request often produces two frames on one connection (an event,
            // then the reply), and with Nagle's algorithm the second waits for the client's
            // delayed ACK of the first (~40 ms on Linux).
            debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
        }
        let io = TokioIo::new(SlottedStream {
            stream,
            _slot: slot,
        });
        // The peer's address travels with each request, for limits kept per address (new
        // users per hour) beyond the connection caps enforced here.
        let ip = PeerIp(peer.ip());
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ip);
                req
            },
        ));
        let builder = builder.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.wait() => {
                    conn.as_mut().graceful_shutdown();
                    match tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    crate::metrics::rejected("header_read_timeout");
                }
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    info!("stopped accepting connections");
}

/// Raises this process's soft file descriptor limit to its hard limit (each connection holds
/// one descriptor), and warns when even that is below `max_connections` plus a margin.
pub fn raise_fd_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        let needed = u64::try_from(max_connections)
            .unwrap_or(u64::MAX)
            .saturating_add(64);
        #[allow(clippy::useless_conversion)]
        let have = u64::from(lim.rlim_cur);
        if have < needed {
            warn!(
                fd_limit = have,
                max_connections,
                "the file descriptor limit is below --max-connections + 64: raise it (systemd LimitNOFILE=, ulimit -n) or lower --max-connections"
            );
        } else {
            info!(fd_limit = have, "file descriptor limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_in_total_and_per_address_and_freed_on_drop() {
        let limits = ListenLimits {
            max_connections: 3,
            max_per_ip: 2,
            header_read_timeout: Duration::from_secs(1),
        };
        let slots = Slots::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.take(a, &limits).unwrap();
        let _a2 = slots.take(a, &limits).unwrap();
        assert_eq!(slots.take(a, &limits).err(), Some(Refusal::PerIp));
        let _b1 = slots.take(b, &limits).unwrap();
        assert_eq!(slots.take(b, &limits).err(), Some(Refusal::Full));
        drop(a1);
        assert!(slots.take(a, &limits).is_ok());
    }
}
