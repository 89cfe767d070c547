//! PEM text in, rustls DER types out; callers own the files the text came from.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::CertError;

/// Every `CERTIFICATE` block, in order (leaf first for a chain file).
///
/// Errors if the text is malformed or holds no certificate at all, so an empty or
/// mis-named file is caught where it is loaded rather than at the first handshake.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| CertError::Pem(err.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificateInPem);
    }
    Ok(certs)
}

/// The first private key block (PKCS#8, SEC1 or PKCS#1).
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|err| CertError::Pem(err.to_string()))?
        .ok_or(CertError::NoPrivateKeyInPem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_wrong_blocks_are_refused() {
        assert!(matches!(
            certs_from_pem(b""),
            Err(CertError::NoCertificateInPem)
        ));
        assert!(matches!(
            private_key_from_pem(b"just text\n"),
            Err(CertError::NoPrivateKeyInPem)
        ));
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            certs_from_pem(key_only),
            Err(CertError::NoCertificateInPem)
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(certs_from_pem(broken), Err(CertError::Pem(_))));
    }
}
