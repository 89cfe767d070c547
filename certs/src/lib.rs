//! Certificates and identities for Patchwork: the certificate authority of a trust domain,
//! leaf issuing by CA policy, the SPIFFE identity type read from a verified certificate's
//! URI SAN, PEM decoding, and the process-wide rustls crypto provider. Everything here is
//! pure and in memory (PEM/DER in, PEM/DER out): this crate knows nothing of tonic, sled,
//! files or the environment; callers do the I/O and decide where keys live.
#![forbid(unsafe_code)]

pub mod authority;
pub mod crl;
pub mod csr;
mod error;
pub mod identity;
pub mod pem;
pub mod tls;
pub mod trust;

pub use authority::{
    CaParams, CertificateAuthority, IssuedCertificate, LeafParams, MAX_CA_VALIDITY_DAYS,
    MAX_LEAF_VALIDITY_DAYS,
};
pub use crl::{
    CrlSummary, RevocationReason, RevokedCertificate, crls_from_pem, normalize_serial_hex,
    summarize_crl_der,
};
pub use csr::{
    CertificateRequest, CsrPolicy, IdentityKind, SignedCertificate, csr_public_key_der,
    request_certificate, request_node_certificate,
};
pub use error::CertError;
pub use identity::{
    CertificateSummary, SpiffeId, identity_from_cert_der, summarize_cert_der, validate_trust_domain,
};
pub use pem::{certs_from_pem, private_key_from_pem};
pub use tls::{MinTlsVersion, OwnCertificate, client_config, server_config};
pub use trust::TrustBundle;

/// Installs ring as the process-wide rustls crypto provider; safe to call any number of times.
///
/// Call it from `main` and from test harnesses before building any rustls config: with one
/// backend compiled in this is the only provider there is, and installing it explicitly
/// keeps `ServerConfig::builder()` from depending on crate-feature guesswork.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed (by an earlier call, or by the
    // embedding process), which is exactly the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_crypto_provider_is_idempotent() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
