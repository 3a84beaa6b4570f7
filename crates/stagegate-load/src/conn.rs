//! One keep-alive HTTP/1.1 connection per virtual user, over TCP or TLS.
//!
//! hyper's client connection comes in two halves: a `SendRequest` and a `Connection`
//! future that does the I/O. [`Conn::drive`] polls both in the worker's own task, so a
//! request costs no hop between tasks.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

use crate::LoadError;

pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How to reach the target: its address and, for https, the TLS settings.
#[derive(Clone)]
pub(crate) struct Connector {
    pub addr: SocketAddr,
    pub tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// Why no connection could be made. Formatted only when shown: a run against a dead port
/// fails every request, and keeps one message.
#[derive(Debug)]
pub(crate) struct ConnectError {
    addr: SocketAddr,
    failure: ConnectFailure,
}

#[derive(Debug)]
enum ConnectFailure {
    Tcp(io::Error),
    Tls(io::Error),
    Http(hyper::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr;
        match &self.failure {
            ConnectFailure::Tcp(e) => write!(f, "{addr}: {e}"),
            ConnectFailure::Tls(e) => write!(f, "TLS handshake with {addr}: {e}"),
            ConnectFailure::Http(e) => write!(f, "HTTP handshake with {addr}: {e}"),
        }
    }
}

impl Connector {
    pub async fn new(host: &str, port: u16, tls: bool) -> Result<Self, LoadError> {
        let resolve = |reason: String| LoadError::Resolve {
            host: host.to_string(),
            reason,
        };
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| resolve(e.to_string()))?
            .next()
            .ok_or_else(|| resolve("no address found".into()))?;
        let tls = if tls {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| LoadError::Tls(e.to_string()))?
                .with_platform_verifier()
                .map_err(|e| LoadError::Tls(e.to_string()))?
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| LoadError::Tls(format!("`{host}` is not a server name: {e}")))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Self { addr, tls })
    }

    /// Opens a connection and does the HTTP/1.1 handshake.
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let failed = |failure| ConnectError {
            addr: self.addr,
            failure,
        };
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| failed(ConnectFailure::Tcp(e)))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((c, name)) => Stream::Tls(Box::new(
                c.connect(name.clone(), tcp)
                    .await
                    .map_err(|e| failed(ConnectFailure::Tls(e)))?,
            )),
        };
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(ConnectFailure::Http(e)))?;
        Ok(Conn {
            sender,
            driver: Some(conn),
        })
    }
}

pub(crate) type Body = Full<Bytes>;

/// An open connection: the request half and the I/O half.
pub(crate) struct Conn {
    pub sender: http1::SendRequest<Body>,
    driver: Option<http1::Connection<TokioIo<Stream>, Body>>,
}

impl Conn {
    /// Whether a request can be sent now (the connection is open and idle).
    pub fn usable(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Runs `work` (which uses the sender) while doing the connection's I/O in the same
    /// task, until it finishes or `deadline` passes (`None`).
    pub async fn drive<F, T>(
        &mut self,
        deadline: Pin<&mut tokio::time::Sleep>,
        work: F,
    ) -> Option<T>
    where
        F: AsyncFnOnce(&mut http1::SendRequest<Body>) -> T,
    {
        let Conn { sender, driver } = self;
        let fut = work(sender);
        let mut fut = std::pin::pin!(fut);
        let mut deadline = deadline;
        std::future::poll_fn(|cx| {
            if let Some(d) = driver.as_mut()
                && Pin::new(d).poll(cx).is_ready()
            {
                // Closed by the server or broken: `work` sees it through the sender.
                *driver = None;
            }
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}
