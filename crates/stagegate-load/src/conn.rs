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
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// How to reach the target: its addresses and, for https, the TLS settings.
pub(crate) struct Connector {
    /// Every address the host resolved to, in the resolver's order (`localhost` may give
    /// `::1` before `127.0.0.1` while the server listens on one of them only).
    addrs: Vec<SocketAddr>,
    /// The address the last connection was made to: tried first.
    preferred: AtomicUsize,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

/// Why no connection could be made. Formatted only when shown: a run against a dead port
/// fails every request, and keeps one message.
#[derive(Debug)]
pub(crate) struct ConnectError {
    addr: SocketAddr,
    failure: ConnectFailure,
    /// The host's other addresses, tried after `addr` and refused too.
    others: usize,
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
            ConnectFailure::Tcp(e) => write!(f, "{addr}: {e}")?,
            ConnectFailure::Tls(e) => write!(f, "TLS handshake with {addr}: {e}")?,
            ConnectFailure::Http(e) => write!(f, "HTTP handshake with {addr}: {e}")?,
        }
        match self.others {
            0 => Ok(()),
            1 => write!(f, " (the host's other address failed too)"),
            n => write!(f, " (the host's {n} other addresses failed too)"),
        }
    }
}

impl Connector {
    pub async fn new(host: &str, port: u16, tls: bool) -> Result<Self, LoadError> {
        let resolve = |reason: String| LoadError::Resolve {
            host: host.to_string(),
            reason,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| resolve(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(resolve("no address found".into()));
        }
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
        Ok(Self::with_addrs(addrs, tls))
    }

    fn with_addrs(
        addrs: Vec<SocketAddr>,
        tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    ) -> Self {
        Self {
            addrs,
            preferred: AtomicUsize::new(0),
            tls,
        }
    }

    /// Opens a TCP connection: to the address that worked last, else to each of the others
    /// in order (remembering the one that answers).
    async fn tcp(&self) -> Result<(TcpStream, SocketAddr), ConnectError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failed: Option<ConnectError> = None;
        for i in 0..self.addrs.len() {
            let at = (first + i) % self.addrs.len();
            let addr = self.addrs[at];
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    if at != first {
                        self.preferred.store(at, Ordering::Relaxed);
                    }
                    return Ok((tcp, addr));
                }
                Err(e) => match failed.as_mut() {
                    None => {
                        failed = Some(ConnectError {
                            addr,
                            failure: ConnectFailure::Tcp(e),
                            others: 0,
                        })
                    }
                    Some(f) => f.others += 1,
                },
            }
        }
        Err(failed.expect("a host has at least one address"))
    }

    /// Opens a connection and does the HTTP/1.1 handshake.
    pub async fn connect(&self) -> Result<Conn, ConnectError> {
        let (tcp, addr) = self.tcp().await?;
        let failed = |failure| ConnectError {
            addr,
            failure,
            others: 0,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port that refuses connections (nothing listens on it any more).
    fn refused() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[tokio::test]
    async fn each_address_is_tried_in_order_and_the_one_that_worked_is_remembered() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap();
        let down = refused();
        let c = Connector::with_addrs(vec![down, up], None);
        assert!(c.connect().await.is_ok());
        assert_eq!(c.preferred.load(Ordering::Relaxed), 1, "remembers {up}");
        assert!(c.connect().await.is_ok());
        assert_eq!(c.preferred.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn when_every_address_fails_the_first_failure_is_shown() {
        let (a, b) = (refused(), refused());
        let e = Connector::with_addrs(vec![a, b], None)
            .connect()
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(e.starts_with(&format!("{a}: ")), "{e}");
        assert!(e.ends_with("(the host's other address failed too)"), "{e}");
        let e = Connector::with_addrs(vec![a], None)
            .connect()
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.starts_with(&format!("{a}: ")) && !e.contains("other"),
            "{e}"
        );
    }
}
