//! The HTTP listener: our own accept loop over hyper, because `axum::serve` has no header or
//! body read timeouts and no connection limit, and a few hundred clients that never finish a
//! request otherwise hold every file descriptor.
//!
//! - A request's header must arrive within `header_read_timeout` (hyper's http1 timer, which
//!   also runs while a keep-alive connection waits for its next request, so it is the idle
//!   limit too).
//! - A request body may stall at most `body_read_timeout` between chunks
//!   (tower-http's `TimeoutBody`); the handler then sees a body error and refuses the request.
//! - At most `max_connections` connections are open; more are closed at once when accepted,
//!   so the listen backlog never fills with connections nobody will serve.
//! - With TLS (`[http] tls_certificate`), the handshake must finish within
//!   `header_read_timeout` too, so a client that never completes it holds its slot no longer
//!   than one that never sends a header; then the header timer starts.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// Connection bounds of the HTTP listener (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a request's whole header, and for an idle keep-alive connection's next request.
    pub header_read_timeout: Duration,
    /// Longest a request body may stall.
    pub body_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long in-flight requests may run on after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The limits `[http]` configures.
    pub fn from_config(http: &crate::config::HttpConfig) -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs.max(1)),
            body_read_timeout: Duration::from_secs(http.body_read_timeout_secs.max(1)),
            max_connections: http.max_connections.max(1),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The ALPN protocols offered over TLS: HTTP/1.1 alone, as the connections speak no other.
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight requests finish
/// (at most `limits.shutdown_grace`). With `tls`, every connection is HTTPS (a plain request
/// fails the handshake). Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<crate::tls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // HTTP/1 only: hyper's header timeout covers neither cleartext HTTP/2 (h2c) nor the version
    // sniffing of its auto mode (which waits for 24 bytes without a timer), so either would let
    // an idle connection stay forever. Over TLS, ALPN offers HTTP/1.1 alone, so browsers
    // speak it there too. (No route upgrades connections.)
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("tramy_http_connections_refused_total").increment(1);
            tracing::debug!(%peer, "HTTP connection refused: http.max_connections reached");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            service: connection_service(app.clone(), peer, limits.body_read_timeout),
            watcher: graceful.watcher(),
            peer,
            _slot: slot,
        };
        match &tls {
            None => {
                tokio::spawn(connection.serve(socket));
            }
            Some(tls) => {
                let tls = tls.clone();
                // The handshake holds the slot for at most this; a pending one also delays
                // shutdown by at most this (its watcher), within `shutdown_grace`.
                let handshake_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, tls.accept(socket)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake not finished in time"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("HTTP requests still running at shutdown were cut off");
    }
    Ok(())
}

/// One accepted connection, holding its slot until it ends.
struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
}

impl<S> Connection<S>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    /// Serves HTTP on `io` (the TCP socket, or the TLS stream over it) until it closes.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), self.service)
            .into_owned();
        if let Err(e) = self.watcher.watch(connection).await {
            // Header timeouts, resets and the like: the peer's doing, not ours.
            tracing::debug!(peer = %self.peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// The per-connection hyper service: the peer address as `ConnectInfo`, the body timeout, the
/// router.
fn connection_service(
    app: Router,
    peer: SocketAddr,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = request.map(|body| TimeoutBody::new(body_timeout, body));
        app.clone().oneshot(request)
    })
}
