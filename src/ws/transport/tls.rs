//! TLS over TCP: rustls with the ring provider, webpki or native roots.

use std::sync::{Arc, OnceLock};

use async_io::Async;
use futures_rustls::rustls::{self, pki_types::ServerName, ClientConfig, RootCertStore};
use std::net::TcpStream;

use super::MaybeTlsStream;
use crate::ws::error::ConnectError;

/// Runs the TLS handshake over `tcp`.
pub(crate) async fn handshake_tls(
    tcp: Async<TcpStream>,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<MaybeTlsStream, ConnectError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| ConnectError::InvalidUrl {
        url: host.to_owned(),
        reason: format!("not a valid tls server name: {e}"),
    })?;
    let tls = futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|source| ConnectError::Tls {
            host: host.to_owned(),
            source,
        })?;
    Ok(MaybeTlsStream::Tls(Box::new(tls)))
}

/// A rustls client configuration with the ring provider and the given roots.
pub(crate) fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The default roots: webpki-roots and/or the system's, as the crate features choose.
pub(crate) fn default_roots() -> RootCertStore {
    #[allow(unused_mut)]
    let mut roots = RootCertStore::empty();
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(feature = "native-roots")]
    {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "loading a native root certificate failed");
        }
        roots.add_parsable_certificates(found.certs);
    }
    roots
}

/// The default client configuration, built once.
pub(crate) fn default_client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, rustls::Error>> = OnceLock::new();
    CONFIG.get_or_init(|| client_config(default_roots())).clone()
}
