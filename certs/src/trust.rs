//! What a node trusts: a bundle of CA certificates (its own region's and the
//! regions an operator added) and the CRLs those CAs publish. It builds the
//! verifiers both ends of a TLS connection use, and re-verifies a chain
//! after the bundle changes (so a revocation reaches live connections).
//!
//! Policy, the same everywhere: the chain must end at a CA in the bundle, be
//! within its validity, carry the right extended key usage, and — once any
//! CRL is configured — have a CRL from its issuer that is not expired and
//! does not list it (unknown status and expired CRLs fail closed).
//!
//! And each CA speaks only for its own trust domain: every CA in the bundle
//! carries the URI SAN `spiffe://<trust-domain>`, and a leaf's identity must
//! be in the trust domain of the CA that issued it. Without this, any region
//! trusted for its own nodes could mint a certificate naming another
//! region's node.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::identity::{is_ca, parse_certificate, uri_sans};
use crate::{CertError, SpiffeId, identity_from_cert_der};

/// The CAs and CRLs a node trusts, parsed and checked.
#[derive(Clone)]
pub struct TrustBundle {
    roots: Arc<RootCertStore>,
    ca_certs: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// Each CA's subject (DER) and the trust domain it speaks for.
    domains: Arc<Vec<(Vec<u8>, String)>>,
}

/// The subject DN (DER) of a CA and its trust domain from its one
/// `spiffe://<trust-domain>` URI SAN.
fn ca_domain(ca: &CertificateDer<'_>) -> Result<(Vec<u8>, String), CertError> {
    let cert = parse_certificate(ca.as_ref())?;
    let subject = cert.subject().to_string();
    if !is_ca(&cert)? {
        return Err(CertError::NotACa { subject });
    }
    let uris = uri_sans(&cert)?;
    let domain = match uris.as_slice() {
        [uri] => uri
            .strip_prefix("spiffe://")
            .filter(|td| !td.is_empty() && !td.contains('/')),
        _ => None,
    };
    let domain = domain.ok_or_else(|| {
        CertError::Verifier(format!(
            "CA {subject} does not name its trust domain (one URI SAN spiffe://<trust-domain>)"
        ))
    })?;
    Ok((
        cert.tbs_certificate.subject.as_raw().to_vec(),
        domain.to_owned(),
    ))
}

/// Why a leaf's identity is not one its issuer may vouch for.
fn foreign_identity(identity: &SpiffeId, issuer_domain: Option<&str>) -> Option<String> {
    match issuer_domain {
        Some(domain) if domain == identity.trust_domain() => None,
        Some(domain) => Some(format!(
            "{identity} was issued by the CA of trust domain {domain}, which may only vouch for its own"
        )),
        None => Some(format!(
            "the issuer of {identity} is not in the trust bundle"
        )),
    }
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("cas", &self.ca_certs.len())
            .field("crls", &self.crls.len())
            .finish()
    }
}

fn verifier_error(error: rustls::client::VerifierBuilderError) -> CertError {
    CertError::Verifier(error.to_string())
}

impl TrustBundle {
    /// A bundle from CA certificates and CRLs (DER). Every CA must be a CA
    /// certificate rustls accepts as a trust anchor and name its trust domain.
    pub fn new(
        ca_certs: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<Self, CertError> {
        if ca_certs.is_empty() {
            return Err(CertError::Verifier(
                "the trust bundle holds no CA certificate".into(),
            ));
        }
        let mut roots = RootCertStore::empty();
        let mut domains: Vec<(Vec<u8>, String)> = Vec::new();
        for (i, ca) in ca_certs.iter().enumerate() {
            roots.add(ca.clone()).map_err(|e| {
                CertError::Verifier(format!("CA certificate {} is unusable: {e}", i + 1))
            })?;
            let (subject, domain) = ca_domain(ca)?;
            if let Some((_, other)) = domains.iter().find(|(s, d)| *s == subject && *d != domain) {
                return Err(CertError::Verifier(format!(
                    "two CAs share a subject but speak for trust domains {other} and {domain}"
                )));
            }
            domains.push((subject, domain));
        }
        let bundle = TrustBundle {
            roots: Arc::new(roots),
            ca_certs,
            crls,
            domains: Arc::new(domains),
        };
        // Build both verifiers once so a bad CRL is refused here, not at the
        // first handshake.
        bundle.client_verifier()?;
        bundle.webpki_server_verifier()?;
        Ok(bundle)
    }

    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }

    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
    }

    /// Verifies client certificates during the handshake: a certificate is
    /// required, and it must pass the bundle's policy (module docs).
    pub fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, CertError> {
        let mut builder = WebPkiClientVerifier::builder(self.roots.clone());
        if !self.crls.is_empty() {
            builder = builder
                .with_crls(self.crls.clone())
                .only_check_end_entity_revocation()
                .enforce_revocation_expiration();
        }
        builder.build().map_err(verifier_error)
    }

    fn webpki_server_verifier(&self) -> Result<Arc<WebPkiServerVerifier>, CertError> {
        let mut builder = WebPkiServerVerifier::builder(self.roots.clone());
        if !self.crls.is_empty() {
            builder = builder
                .with_crls(self.crls.clone())
                .only_check_end_entity_revocation()
                .enforce_revocation_expiration();
        }
        builder.build().map_err(verifier_error)
    }

    /// Verifies a server's certificate for a client that meant to call
    /// `expected`: the bundle's policy, the name dialled, and the identity.
    pub fn server_verifier(
        &self,
        expected: SpiffeId,
    ) -> Result<Arc<dyn ServerCertVerifier>, CertError> {
        Ok(Arc::new(IdentityServerVerifier {
            inner: self.webpki_server_verifier()?,
            bundle: self.clone(),
            expected,
        }))
    }

    /// The trust domain of the bundle's CA that issued `leaf`, if any.
    fn issuer_domain(&self, leaf: &CertificateDer<'_>) -> Result<Option<&str>, CertError> {
        let cert = parse_certificate(leaf.as_ref())?;
        let issuer = cert.tbs_certificate.issuer.as_raw();
        Ok(self
            .domains
            .iter()
            .find(|(subject, _)| subject.as_slice() == issuer)
            .map(|(_, domain)| domain.as_str()))
    }

    /// The identity a verified leaf may claim: its one spiffe URI SAN, in the
    /// trust domain of the CA that issued it.
    pub fn identity_of(&self, leaf: &CertificateDer<'_>) -> Result<SpiffeId, CertError> {
        let identity = identity_from_cert_der(leaf.as_ref())?;
        match foreign_identity(&identity, self.issuer_domain(leaf)?) {
            None => Ok(identity),
            Some(reason) => Err(CertError::Untrusted(reason)),
        }
    }

    /// Verifies a client chain against this bundle now (`cert verify`, or a
    /// live connection re-checked after a reload: new CRLs, a CA removed)
    /// and returns the identity it may claim.
    pub fn verify_client_chain(
        &self,
        chain: &[CertificateDer<'static>],
        now: UnixTime,
    ) -> Result<SpiffeId, CertError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| CertError::Verifier("no client certificate".into()))?;
        self.client_verifier()?
            .verify_client_cert(leaf, intermediates, now)
            .map_err(|e| CertError::Untrusted(e.to_string()))?;
        self.identity_of(leaf)
    }
}

/// Checks the server's chain with webpki (CA, validity, serverAuth, CRLs,
/// the name dialled) and then that its identity is the node we meant to call.
#[derive(Debug)]
struct IdentityServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    bundle: TrustBundle,
    expected: SpiffeId,
}

struct WrongServerIdentity {
    expected: SpiffeId,
    found: String,
}

// rustls shows the Debug form in its error message: make it the readable one.
impl std::fmt::Debug for WrongServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for WrongServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server identity is {}, expected {}",
            self.found, self.expected
        )
    }
}

impl std::error::Error for WrongServerIdentity {}

impl ServerCertVerifier for IdentityServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let found = match self.bundle.identity_of(end_entity) {
            Ok(identity) if identity == self.expected => return Ok(ServerCertVerified::assertion()),
            Ok(identity) => identity.to_string(),
            Err(error) => format!("not acceptable ({error})"),
        };
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongServerIdentity {
                expected: self.expected.clone(),
                found,
            }))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
