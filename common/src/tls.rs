//! TLS for every LanceFleet endpoint (`[tls]`), with rustls and one crypto provider
//! (aws-lc-rs) installed at start.
//!
//! A node with `tls.cert` and `tls.key` serves its REST API, Arrow Flight and the executor
//! gRPC service over TLS. With `tls.ca` as well, the links between nodes are mutual: plan
//! executors accept only clients whose certificate that CA signed, and query nodes and
//! control planes verify executors against it and present their own certificate. Both
//! files are read again when they change (checked at most once a second, on a handshake),
//! so a rotated certificate is served to new connections without a restart; connections
//! already open keep theirs.
//!
//! Connections are accepted by [`Accepting`], which runs each TLS handshake in a task of
//! its own (a slow client never holds up the others) and hands finished connections to
//! axum (as a [`Listener`]) or tonic (as a stream of [`Connection`]s).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::serve::Listener;
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// How long a connection to another node may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// TLS settings (`[tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain this node serves with (REST, Flight, executor gRPC) and
    /// presents to executors. Default: none (plaintext).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`. Default: none.
    pub key: Option<PathBuf>,
    /// PEM CA certificates that sign the cluster's node certificates: set, links between
    /// nodes are mutual TLS. Default: none.
    pub ca: Option<PathBuf>,
    /// PEM CA certificates that sign clients' certificates: set, a query node's REST API
    /// and Flight accept only clients presenting a certificate it signed (API keys are
    /// still checked). Default: none (no client certificate asked for).
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(String);

impl<T: Into<String>> From<T> for TlsError {
    fn from(reason: T) -> Self {
        Self(reason.into())
    }
}

impl TlsConfig {
    /// Whether this node serves over TLS.
    pub fn serves_tls(&self) -> bool {
        self.cert.is_some()
    }

    /// Refuses half a certificate, a CA without this node's own certificate, and files
    /// that do not read.
    pub fn validate(&self) -> Result<(), TlsError> {
        if self.ca.is_some() && self.cert.is_none() {
            return Err(TlsError("tls.ca (mutual TLS between nodes) needs this node's tls.cert and tls.key".into()));
        }
        if let Some(client_ca) = &self.client_ca {
            if self.cert.is_none() {
                return Err(TlsError(
                    "tls.client_ca (client certificates) needs this node's tls.cert and tls.key".into(),
                ));
            }
            roots(client_ca)?;
        }
        self.validate_client()
    }

    /// As [`Self::validate`] for the client side of a link only (e.g. towards etcd), where
    /// a CA without a certificate of one's own is fine.
    pub fn validate_client(&self) -> Result<(), TlsError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(TlsError("cert and key are set together or not at all".into()));
        }
        self.identity()?;
        if let Some(ca) = &self.ca {
            roots(ca)?;
        }
        Ok(())
    }

    /// This node's certificate, when it has one.
    pub fn identity(&self) -> Result<Option<Arc<ReloadingIdentity>>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(ReloadingIdentity::load(cert, key)?)),
            _ => Ok(None),
        }
    }

    /// The server side of a public endpoint (REST, Flight), speaking `alpn`: client
    /// certificates signed by `tls.client_ca` required when it is set; none when this node
    /// serves plaintext.
    pub fn server(&self, alpn: &[&[u8]]) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        self.server_requiring(self.client_ca.as_deref(), "tls.client_ca", alpn)
    }

    /// The server side of the executor service: client certificates signed by `tls.ca`
    /// required when it is set.
    pub fn node_server(&self) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        self.server_requiring(self.ca.as_deref(), "tls.ca", &[b"h2"])
    }

    /// A server config with this node's certificate, speaking `alpn`, requiring client
    /// certificates signed by the CA at `client_ca` (the setting `key`) when there is one.
    fn server_requiring(
        &self,
        client_ca: Option<&Path>,
        key: &str,
        alpn: &[&[u8]],
    ) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        let Some(identity) = self.identity()? else { return Ok(None) };
        let builder = ServerConfig::builder();
        let builder = match client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots(ca)?))
                    .build()
                    .map_err(|error| TlsError(format!("{key}: {error}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(identity);
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Some(Arc::new(config)))
    }

    /// The client side of links to executors: verifies them against `tls.ca` and presents
    /// this node's certificate; none without a CA.
    pub fn node_client(&self) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        let Some(ca) = &self.ca else { return Ok(None) };
        let builder = ClientConfig::builder().with_root_certificates(roots(ca)?);
        let mut config = match self.identity()? {
            Some(identity) => builder.with_client_cert_resolver(identity),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// Installs aws-lc-rs as the process's one rustls crypto provider (once; later calls do
/// nothing).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The CA certificates in the PEM file at `path`.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|error| TlsError(format!("{}: {error}", path.display())))?;
    }
    Ok(roots)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError(format!("cannot read certificates from {}: {error}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

/// A certificate and key read from PEM files, and read again when either changes.
#[derive(Debug)]
pub struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingIdentity {
    /// Reads `cert` and `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let loaded = Loaded { key: certified_key(cert, key)?, stamp: stamp(cert, key), checked: Instant::now() };
        Ok(Arc::new(Self { cert: cert.to_path_buf(), key: key.to_path_buf(), state: RwLock::new(loaded) }))
    }

    /// The certificate in force, read again first if the files changed since the last
    /// look (at most once a second). Files that no longer read keep the old one.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        if let Ok(state) = self.state.read()
            && state.checked.elapsed() < RELOAD_CHECK
        {
            return Some(state.key.clone());
        }
        let mut state = self.state.write().ok()?;
        state.checked = Instant::now();
        let now = stamp(&self.cert, &self.key);
        if now != state.stamp {
            match certified_key(&self.cert, &self.key) {
                Ok(key) => {
                    state.key = key;
                    state.stamp = now;
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(error) => tracing::warn!(%error, "TLS certificate not reloaded; keeping the one in force"),
            }
        }
        Some(state.key.clone())
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn stamp(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok();
    (modified(cert), modified(key))
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certificates(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| TlsError(format!("cannot read a private key from {}: {error}", key.display())))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|error| TlsError(format!("{}: {error}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|error| TlsError(format!("{} does not match {}: {error}", key.display(), cert.display())))?;
    Ok(Arc::new(certified))
}

/// An accepted connection, over TLS or not.
#[derive(Debug)]
pub enum Connection {
    /// Plaintext.
    Plain(TcpStream),
    /// After a finished TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connection {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(stream) => stream,
            Self::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(context, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(context, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(context, buf),
            Self::Tls(stream) => Pin::new(stream).poll_write(context, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(context),
            Self::Tls(stream) => Pin::new(stream).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(context),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp().connect_info()
    }
}

/// Connections accepted on a listener (with `TCP_NODELAY`), through their TLS handshake
/// when a server configuration is given.
#[derive(Debug)]
pub struct Accepting {
    connections: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Accepting {
    /// Accepts on `listener`, over TLS with `tls`.
    pub fn new(listener: TcpListener, tls: Option<Arc<ServerConfig>>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        let acceptor = tls.map(TlsAcceptor::from);
        let task = tokio::spawn(accept_loop(listener, acceptor, sender));
        Ok(Self { connections, local, task })
    }

    /// The connections as a stream, as tonic's servers take them.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Connection>> + Send + 'static {
        futures::stream::unfold(self, |mut accepting| async move {
            let (connection, _) = accepting.connections.recv().await?;
            Some((Ok(connection), accepting))
        })
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener for Accepting {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        match self.connections.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    sender: mpsc::Sender<(Connection, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let Some(acceptor) = acceptor.clone() else {
            if sender.send((Connection::Plain(stream), peer)).await.is_err() {
                return;
            }
            continue;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = sender.send((Connection::Tls(Box::new(tls)), peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// A lazily connecting gRPC channel to another node at `address`: over TLS with `tls`
/// when the address is `https://`.
pub fn channel(address: &str, tls: Option<Arc<ClientConfig>>) -> Result<Channel, TlsError> {
    let endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|error| TlsError(format!("invalid address '{address}': {error}")))?;
    let secure = address.starts_with("https://");
    match (secure, tls) {
        (false, _) => Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true).connect_lazy()),
        (true, None) => Err(TlsError(format!("'{address}' is https: set tls.ca (and this node's certificate)"))),
        (true, Some(config)) => failover_channel(endpoint, &[address.to_string()], config),
    }
}

/// A lazily connecting gRPC channel over TLS (`endpoint`'s settings) to one of `addresses`
/// at a time: a new connection tries them in order, from the one that answered last, so
/// it moves on when that one is gone (for services whose members all answer alike, such
/// as etcd's).
pub fn failover_channel(endpoint: Endpoint, addresses: &[String], tls: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    let targets = addresses
        .iter()
        .map(|address| {
            let uri =
                address.parse::<Uri>().map_err(|error| TlsError(format!("invalid address '{address}': {error}")))?;
            let host = uri.host().unwrap_or_default().trim_matches(|c| c == '[' || c == ']').to_string();
            let name = ServerName::try_from(host.clone())
                .map_err(|error| TlsError(format!("invalid host in '{address}': {error}")))?;
            Ok((host, uri.port_u16().unwrap_or(443), name))
        })
        .collect::<Result<Vec<_>, TlsError>>()?;
    if targets.is_empty() {
        return Err(TlsError("no address to connect to".into()));
    }
    let targets = Arc::new(targets);
    let connector = TlsConnector::from(tls);
    let answered = Arc::new(AtomicUsize::new(0));
    let connect = tower::service_fn(move |_uri: Uri| {
        let (targets, connector, answered) = (targets.clone(), connector.clone(), answered.clone());
        async move {
            let first = answered.load(Ordering::Relaxed);
            let mut failure = io::Error::other("no address to connect to");
            for index in (first..targets.len()).chain(0..first) {
                let (host, port, name) = &targets[index];
                match dial(&connector, host, *port, name.clone()).await {
                    Ok(stream) => {
                        answered.store(index, Ordering::Relaxed);
                        return Ok(TokioIo::new(stream));
                    }
                    Err(error) => {
                        tracing::debug!(%host, port, %error, "TLS connection failed");
                        failure = error;
                    }
                }
            }
            Err(failure)
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}

/// Opens a TCP connection to `host:port` and a TLS session over it for `name`.
async fn dial(
    connector: &TlsConnector,
    host: &str,
    port: u16,
    name: ServerName<'static>,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    tcp.set_nodelay(true)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_certificate_and_a_ca_alone_are_refused() {
        let half = TlsConfig { cert: Some("/x.pem".into()), ..TlsConfig::default() };
        assert!(half.validate().unwrap_err().to_string().contains("together"));
        let ca_only = TlsConfig { ca: Some("/ca.pem".into()), ..TlsConfig::default() };
        assert!(ca_only.validate().unwrap_err().to_string().contains("tls.cert"));
        let client_ca_only = TlsConfig { client_ca: Some("/ca.pem".into()), ..TlsConfig::default() };
        assert!(client_ca_only.validate().unwrap_err().to_string().contains("tls.client_ca"));
        let missing = TlsConfig {
            cert: Some("/nonexistent.pem".into()),
            key: Some("/nonexistent.key".into()),
            ..TlsConfig::default()
        };
        assert!(missing.validate().unwrap_err().to_string().contains("/nonexistent.pem"));
        assert!(TlsConfig::default().validate().is_ok() && !TlsConfig::default().serves_tls());
        assert!(channel("https://pe-0:7070", None).unwrap_err().to_string().contains("tls.ca"));
    }
}
