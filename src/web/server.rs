//! The HTTP server at the edge: accepts connections up to a cap, serves
//! HTTP/1 and HTTP/2 (hyper, the same engine poem's own server uses) and
//! cuts the clients that would otherwise hold a connection for free:
//!
//! - **header timeout**: a request head (and a new connection's first
//!   request) must arrive within it, counted from its first byte, so a
//!   client sending a header byte every few seconds is cut;
//! - **idle timeout**: a connection with no request in flight and no byte
//!   in or out for this long is closed (a kept-alive connection waits for
//!   its next request this long);
//! - **connection cap**: past it, new connections wait in the listen
//!   backlog until one closes.
//!
//! Bodies are bounded and timed by [`super::middleware::BodyLimit`].

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use poem::{
    Endpoint, Request,
    endpoint::BoxEndpoint,
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};

/// How long the edge lets a client take, and how many may be connected.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `endpoint` on `listener` until `shutdown` resolves; then stops
/// accepting, lets open requests finish for up to `grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    endpoint: BoxEndpoint<'static>,
    limits: EdgeLimits,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // hyper's own header timeout would also cut a kept-alive connection
    // waiting for its next request; the watch below times a head from its
    // first byte instead.
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().header_read_timeout(None);
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        metrics::gauge!("http_open_connections").increment(1.0);
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(Watch::new());
        let io = TokioIo::new(Watched::new(stream, watch.clone()));
        let service = {
            let (endpoint, watch) = (endpoint.clone(), watch.clone());
            hyper::service::service_fn(move |req| {
                let in_flight = watch.request_started();
                let endpoint = endpoint.clone();
                async move {
                    let req = Request::from((
                        req,
                        LocalAddr(local.into()),
                        RemoteAddr(remote.into()),
                        Scheme::HTTP,
                    ));
                    let resp = endpoint.get_response(req).await;
                    drop(in_flight);
                    Ok::<_, Infallible>(hyper::Response::from(resp))
                }
            })
        };
        let connection = graceful.watch(
            http.serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                cut = watch.expired(limits) => {
                    metrics::counter!("http_connections_cut_total", "why" => cut).increment(1);
                    tracing::debug!(%remote, why = cut, "closing a connection");
                }
            }
            drop(slot);
            metrics::gauge!("http_open_connections").decrement(1.0);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    Ok(())
}

/// Milliseconds since the connection opened, as a sentinel-free clock.
const NONE: u64 = u64::MAX;

/// What the watchdog of one connection knows about it.
struct Watch {
    opened: Instant,
    /// Milliseconds since `opened` of the last byte in or out.
    last_io: AtomicU64,
    /// Since when (ms) a request head has been arriving, or [`NONE`]. A new
    /// connection starts out owing its first request.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    /// HTTP/2 multiplexes: bytes between requests (window updates, pings)
    /// start no head, so only the first request is timed.
    http2: AtomicBool,
}

impl Watch {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn bytes_read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.http2.load(Ordering::Relaxed) {
            let _ =
                self.head_since
                    .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn bytes_written(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// A whole request head arrived: its timer stops, and the connection
    /// is busy until the answer is ready.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Release);
        InFlight(self.clone())
    }

    /// Resolves when the connection should be cut, naming why.
    async fn expired(&self, limits: EdgeLimits) -> &'static str {
        let header = limits.header_timeout.as_millis() as u64;
        let idle = limits.idle_timeout.as_millis() as u64;
        loop {
            let now = self.now();
            let head = match self.head_since.load(Ordering::Acquire) {
                NONE => NONE,
                since => since.saturating_add(header),
            };
            let quiet = if self.in_flight.load(Ordering::Acquire) == 0 {
                self.last_io.load(Ordering::Relaxed).saturating_add(idle)
            } else {
                NONE
            };
            if now >= head {
                return "header_timeout";
            }
            if now >= quiet {
                return "idle_timeout";
            }
            // Busy connections are looked at again within a second.
            let next = head.min(quiet).min(now + 1_000);
            tokio::time::sleep(Duration::from_millis(next - now)).await;
        }
    }
}

/// A request being answered; the connection is not idle meanwhile.
struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.bytes_written();
    }
}

/// The socket, telling the watch about every byte that moves.
struct Watched {
    /// Taken by [`Drop`] to close it gracefully.
    inner: Option<TcpStream>,
    watch: Arc<Watch>,
    /// The first bytes the client sent, to tell HTTP/2's preface (`PRI`)
    /// from an HTTP/1 request.
    preface: Vec<u8>,
}

impl Watched {
    fn new(inner: TcpStream, watch: Arc<Watch>) -> Self {
        Self {
            inner: Some(inner),
            watch,
            preface: Vec::with_capacity(3),
        }
    }

    fn socket(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.inner
                .as_mut()
                .expect("the socket is only taken on drop"),
        )
    }
}

/// How long a closed connection still reads (and discards) what its client
/// sends, at most.
const LINGER: Duration = Duration::from_secs(2);

impl Drop for Watched {
    /// Closes like nginx's lingering close: the answer is sent, the write
    /// side shut, and whatever the client is still sending (the rest of a
    /// refused 50 MB body) read and dropped for a moment. Closing with
    /// unread bytes would make the kernel reset the connection, and the
    /// client would lose the answer (413) it has not read yet.
    fn drop(&mut self) {
        let (Some(mut socket), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut socket).await;
            let mut sink = [0u8; 16 * 1024];
            let drain = async {
                while let Ok(read) = tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await {
                    if read == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        });
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.socket().poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            if self.preface.len() < 3 {
                let take = (3 - self.preface.len()).min(read.len());
                let first = read[..take].to_vec();
                self.preface.extend_from_slice(&first);
                if self.preface == b"PRI" {
                    self.watch.http2.store(true, Ordering::Relaxed);
                }
            }
            self.watch.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.socket().poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = self.socket().poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> EdgeLimits {
        EdgeLimits {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            max_connections: 10,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_first_request_within_the_header_timeout() {
        let watch = Watch::new();
        assert_eq!(watch.expired(limits()).await, "header_timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickling_in_is_cut_however_often_a_byte_arrives() {
        let watch = Arc::new(Watch::new());
        let trickle = {
            let watch = watch.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    watch.bytes_read();
                }
            }
        };
        let cut = tokio::select! {
            cut = watch.expired(limits()) => cut,
            () = trickle => unreachable!(),
        };
        assert_eq!(cut, "header_timeout");
        assert!(watch.now() < 400, "cut at the header timeout, not later");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_one() {
        let watch = Arc::new(Watch::new());
        watch.bytes_read();
        drop(watch.request_started());
        let started = watch.now();
        assert_eq!(watch.expired(limits()).await, "idle_timeout");
        assert!(watch.now() - started >= 600);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle() {
        let watch = Arc::new(Watch::new());
        let busy = watch.request_started();
        let waited = tokio::time::timeout(Duration::from_secs(5), watch.expired(limits())).await;
        assert!(waited.is_err(), "a slow answer is not a slow client");
        drop(busy);
        assert_eq!(watch.expired(limits()).await, "idle_timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_requests_start_no_head() {
        let watch = Arc::new(Watch::new());
        watch.http2.store(true, Ordering::Relaxed);
        drop(watch.request_started());
        watch.bytes_read();
        assert_eq!(watch.head_since.load(Ordering::Relaxed), NONE);
        assert_eq!(watch.expired(limits()).await, "idle_timeout");
    }
}
