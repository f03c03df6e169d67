//! The byte stream an association runs on: plain TCP, or TLS over it (PS3.15 B.1, Basic TLS
//! Secure Transport Connection Profile) when `[dimse] tls_certificate` is set. The association
//! code reads and writes PDUs on either alike.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::tls::TlsAcceptor;

/// An accepted DICOM connection.
pub enum DimseStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: rustls' connection state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl From<TcpStream> for DimseStream {
    fn from(socket: TcpStream) -> Self {
        DimseStream::Plain(socket)
    }
}

/// Why a connection did not become a [`DimseStream`].
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The TLS handshake failed (not TLS, no shared version or suite, a client certificate
    /// missing or not trusted, ...).
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] io::Error),
    /// The handshake did not finish in time.
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
}

/// `socket` as is without `tls`; with it, after a TLS handshake that must finish `within` (the
/// ARTIM time: a peer that never completes the handshake holds its connection no longer than one
/// that never sends its A-ASSOCIATE-RQ).
pub async fn accept(
    socket: TcpStream,
    tls: Option<&TlsAcceptor>,
    within: Duration,
) -> Result<DimseStream, HandshakeError> {
    let Some(tls) = tls else {
        return Ok(DimseStream::Plain(socket));
    };
    match tokio::time::timeout(within, tls.accept(socket)).await {
        Ok(stream) => Ok(DimseStream::Tls(Box::new(stream?))),
        Err(_) => Err(HandshakeError::Timeout(within)),
    }
}

impl AsyncRead for DimseStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DimseStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            DimseStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for DimseStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            DimseStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            DimseStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DimseStream::Plain(s) => Pin::new(s).poll_flush(cx),
            DimseStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            DimseStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            DimseStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
