//! rustls configurations for both ends of a node's connections: TLS 1.3 by
//! default (1.2 only as an explicit floor), client certificates required,
//! the trust bundle's verifiers, HTTP/2 by ALPN (tonic needs it), no 0-RTT.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

use crate::{CertError, SpiffeId, TrustBundle};

/// The oldest TLS version a node speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MinTlsVersion {
    /// TLS 1.3 only.
    #[default]
    Tls13,
    /// TLS 1.2 and 1.3 (for peers that cannot yet do 1.3).
    Tls12,
}

fn versions(min: MinTlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS12_AND_13: &[&SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    match min {
        MinTlsVersion::Tls13 => TLS13_ONLY,
        MinTlsVersion::Tls12 => TLS12_AND_13,
    }
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A node's own certificate chain and key, checked to belong together.
#[derive(Clone)]
pub struct OwnCertificate {
    key: Arc<CertifiedKey>,
    identity: SpiffeId,
}

impl std::fmt::Debug for OwnCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnCertificate")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl OwnCertificate {
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertError> {
        let leaf = chain.first().ok_or_else(|| {
            CertError::Verifier("the certificate file holds no certificate".into())
        })?;
        let identity = crate::identity_from_cert_der(leaf.as_ref())?;
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
            CertError::Verifier(format!("the key does not fit the certificate: {e}"))
        })?;
        certified.keys_match().map_err(|e| {
            CertError::Verifier(format!("the key does not fit the certificate: {e}"))
        })?;
        Ok(OwnCertificate {
            key: Arc::new(certified),
            identity,
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }
}

fn tls_error(error: rustls::Error) -> CertError {
    CertError::Verifier(error.to_string())
}

/// The server side: requires a client certificate that passes `trust`.
pub fn server_config(
    own: &OwnCertificate,
    trust: &TrustBundle,
    min_version: MinTlsVersion,
) -> Result<ServerConfig, CertError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_version))
        .map_err(tls_error)?
        .with_client_cert_verifier(trust.client_verifier()?)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            own.key.clone(),
        )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

/// The client side: presents `own`, and accepts only a server whose chain
/// passes `trust` and whose identity is `expected`.
pub fn client_config(
    own: &OwnCertificate,
    trust: &TrustBundle,
    expected: SpiffeId,
    min_version: MinTlsVersion,
) -> Result<ClientConfig, CertError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(min_version))
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(trust.server_verifier(expected)?)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            own.key.clone(),
        )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.enable_early_data = false;
    Ok(config)
}
