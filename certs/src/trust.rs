//! What a node trusts: a bundle of CA certificates (its own region's and the
//! regions an operator added) and the CRLs those CAs publish. It builds the
//! verifiers both ends of a TLS connection use, and re-verifies a chain
//! after the bundle changes (so a revocation reaches live connections).
//!
//! Policy, the same everywhere: the chain must end at a CA in the bundle, be
//! within its validity, carry the right extended key usage (the leaf must
//! name clientAuth or serverAuth for its end: webpki alone lets a leaf
//! with no EKU extension through for both), and — once any
//! CRL is configured — have a CRL from its issuer that is not expired and
//! does not list it (unknown status and expired CRLs fail closed).
//!
//! And each CA speaks only for its own trust domain: every CA in the bundle
//! carries the URI SAN `spiffe://<trust-domain>`, and a leaf's identity must
//! be in the trust domain of the CA that issued it. Without this, any region
//! trusted for its own nodes could mint a certificate naming another
//! region's node.
//!
//! Our CAs issue leaves directly, so a chain carrying intermediates is
//! refused everywhere (handshakes both ways, re-verification). webpki would
//! otherwise build a path through an intermediate the peer sends — and it
//! does not enforce a trust anchor's path length — so a trusted CA could
//! sign an intermediate *named* like another region's CA and issue that
//! region's identities under it. For the same reason the CA a leaf's
//! identity is checked against is the bundle CA whose key signed the leaf,
//! not merely the one whose name it carries as issuer.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::identity::{is_ca, parse_certificate, uri_sans};
use crate::{CertError, SpiffeId, identity_from_cert_der};

/// The CAs and CRLs a node trusts, parsed and checked.
#[derive(Clone)]
pub struct TrustBundle {
    roots: Arc<RootCertStore>,
    ca_certs: Vec<CertificateDer<'static>>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// Each CA's subject (DER) and the trust domain it speaks for, in the
    /// order of `ca_certs`.
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
            "no CA in the trust bundle signed the certificate of {identity}"
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

const INTERMEDIATES_REFUSED: &str =
    "the certificate chain carries intermediate certificates; Patchwork CAs issue leaves directly";

/// A refusal rustls carries as `CertificateError::Other`.
struct Refusal(&'static str);

// rustls shows the Debug form in its error message: make it the readable one.
impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Refusal {}

/// Refuses a chain carrying any certificate beyond the leaf, except a copy of a trusted CA
/// certificate itself: OpenSSL (curl, `openssl s_client`) appends the root it found in
/// its own trust store, which adds no path and no authority (the chain is verified
/// without it, from the leaf to the bundle).
fn refuse_intermediates(
    intermediates: &[CertificateDer<'_>],
    ca_certs: &[CertificateDer<'static>],
) -> Result<(), rustls::Error> {
    if intermediates
        .iter()
        .all(|extra| ca_certs.iter().any(|ca| ca.as_ref() == extra.as_ref()))
    {
        return Ok(());
    }
    Err(rustls::Error::InvalidCertificate(
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(Refusal(
            INTERMEDIATES_REFUSED,
        )))),
    ))
}

/// The purpose a leaf must be issued for at one end of a connection.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    ClientAuth,
    ServerAuth,
}

impl Purpose {
    fn refusal(self, leaf_has_eku: bool) -> &'static str {
        match (self, leaf_has_eku) {
            (Purpose::ClientAuth, false) => {
                "the certificate has no extended key usage; clientAuth is required"
            }
            (Purpose::ClientAuth, true) => {
                "the certificate's extended key usage does not include clientAuth"
            }
            (Purpose::ServerAuth, false) => {
                "the certificate has no extended key usage; serverAuth is required"
            }
            (Purpose::ServerAuth, true) => {
                "the certificate's extended key usage does not include serverAuth"
            }
        }
    }
}

/// Requires `purpose` in the leaf's extended key usage. webpki checks the
/// purpose only when the extension is present and passes a leaf without
/// one for any use; our CAs always issue both purposes, so a leaf without
/// them was not made for this.
fn require_purpose(leaf: &CertificateDer<'_>, purpose: Purpose) -> Result<(), rustls::Error> {
    let cert = parse_certificate(leaf.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let eku = cert
        .extended_key_usage()
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let allowed = eku.as_ref().is_some_and(|eku| match purpose {
        Purpose::ClientAuth => eku.value.client_auth,
        Purpose::ServerAuth => eku.value.server_auth,
    });
    if allowed {
        return Ok(());
    }
    Err(rustls::Error::InvalidCertificate(
        rustls::CertificateError::Other(rustls::OtherError(Arc::new(Refusal(
            purpose.refusal(eku.is_some()),
        )))),
    ))
}

/// webpki's client verifier, refusing any chain with intermediates first
/// (module docs) and a leaf not issued for clientAuth after.
#[derive(Debug)]
struct DirectlyIssuedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    ca_certs: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for DirectlyIssuedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        refuse_intermediates(intermediates, &self.ca_certs)?;
        // Verified from the leaf alone: a trusted root sent along is not a path.
        let verified = self.inner.verify_client_cert(end_entity, &[], now)?;
        require_purpose(end_entity, Purpose::ClientAuth)?;
        Ok(verified)
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

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
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
    /// required, issued directly by a bundle CA, and it must pass the
    /// bundle's policy (module docs).
    pub fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, CertError> {
        let mut builder = WebPkiClientVerifier::builder(self.roots.clone());
        if !self.crls.is_empty() {
            builder = builder
                .with_crls(self.crls.clone())
                .only_check_end_entity_revocation()
                .enforce_revocation_expiration();
        }
        let inner = builder.build().map_err(verifier_error)?;
        Ok(Arc::new(DirectlyIssuedClientVerifier {
            inner,
            ca_certs: self.ca_certs.clone(),
        }))
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

    /// The trust domain of the bundle's CA that issued `leaf`, if any: a CA
    /// whose subject is the leaf's issuer *and* whose key signed the leaf
    /// (a name alone can be copied; module docs).
    fn issuer_domain(&self, leaf: &CertificateDer<'_>) -> Result<Option<&str>, CertError> {
        let cert = parse_certificate(leaf.as_ref())?;
        let issuer = cert.tbs_certificate.issuer.as_raw();
        for (ca_der, (subject, domain)) in self.ca_certs.iter().zip(self.domains.iter()) {
            if subject.as_slice() != issuer {
                continue;
            }
            let ca = parse_certificate(ca_der.as_ref())?;
            if cert.verify_signature(Some(ca.public_key())).is_ok() {
                return Ok(Some(domain.as_str()));
            }
        }
        Ok(None)
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
    /// and returns the identity it may claim. A chain of more than the leaf
    /// is refused (module docs).
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

/// Refuses a chain with intermediates, checks the server's chain with webpki
/// (CA, validity, serverAuth if an EKU is present, CRLs, the name dialled),
/// requires serverAuth even when no EKU is, and then that its identity is
/// the node we meant to call.
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
        refuse_intermediates(intermediates, &self.bundle.ca_certs)?;
        self.inner
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        require_purpose(end_entity, Purpose::ServerAuth)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CaParams, CertificateAuthority, LeafParams};
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };

    const SURREY: &str = "surrey.patchwork.uk";

    fn ca(trust_domain: &str, display_name: &str) -> CertificateAuthority {
        CertificateAuthority::generate(&CaParams {
            trust_domain: trust_domain.into(),
            display_name: display_name.into(),
            validity_days: 2,
        })
        .expect("ca")
    }

    /// Victoria's CA (trusted, for Victoria) signs an intermediate named
    /// exactly like Surrey's CA, and under it a leaf claiming Surrey's node:
    /// returns (leaf, intermediate).
    fn impersonation(
        victoria: &CertificateAuthority,
    ) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let victoria_issuer = Issuer::from_ca_cert_pem(
            victoria.cert_pem(),
            KeyPair::from_pem(&victoria.key_pem()).expect("victoria key"),
        )
        .expect("victoria issuer");
        let now = time::OffsetDateTime::now_utc();
        let mut named_like_surrey = DistinguishedName::new();
        named_like_surrey.push(DnType::CommonName, "Surrey County Council");
        named_like_surrey.push(DnType::OrganizationName, "Surrey County Council");
        let mut intermediate = CertificateParams::default();
        intermediate.distinguished_name = named_like_surrey;
        intermediate.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        intermediate.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        intermediate.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{SURREY}").try_into().expect("uri"),
        )];
        intermediate.not_before = now - time::Duration::hours(1);
        intermediate.not_after = now + time::Duration::days(1);
        let intermediate_key = KeyPair::generate().expect("key");
        let intermediate_cert = intermediate
            .signed_by(&intermediate_key, &victoria_issuer)
            .expect("sign intermediate");

        let mut leaf = CertificateParams::default();
        leaf.distinguished_name.push(DnType::CommonName, "surrey");
        leaf.subject_alt_names = vec![
            SanType::URI(
                format!("spiffe://{SURREY}/node/surrey")
                    .try_into()
                    .expect("uri"),
            ),
            SanType::DnsName("localhost".try_into().expect("dns")),
        ];
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.not_before = now - time::Duration::hours(1);
        leaf.not_after = now + time::Duration::days(1);
        let leaf_cert = leaf
            .signed_by(
                &KeyPair::generate().expect("key"),
                &Issuer::new(intermediate, intermediate_key),
            )
            .expect("sign leaf");
        (leaf_cert.der().clone(), intermediate_cert.der().clone())
    }

    #[test]
    fn a_trusted_ca_cannot_vouch_for_another_domain_through_a_lookalike_intermediate() {
        crate::install_crypto_provider();
        let surrey = ca(SURREY, "Surrey County Council");
        let victoria = ca("victoria.patchwork.au", "State of Victoria");
        let bundle = TrustBundle::new(
            vec![surrey.cert_der().clone(), victoria.cert_der().clone()],
            vec![],
        )
        .expect("bundle");
        let (leaf, intermediate) = impersonation(&victoria);
        let now = UnixTime::now();

        // The attack is real: webpki alone builds the path through the
        // lookalike intermediate to Victoria's CA.
        WebPkiClientVerifier::builder(bundle.roots.clone())
            .build()
            .expect("webpki verifier")
            .verify_client_cert(&leaf, std::slice::from_ref(&intermediate), now)
            .expect("webpki alone accepts the chain");

        let chain = vec![leaf.clone(), intermediate.clone()];
        let refused = bundle
            .verify_client_chain(&chain, now)
            .expect_err("re-verification refuses intermediates")
            .to_string();
        assert!(refused.contains("intermediate"), "{refused}");
        let refused = bundle
            .client_verifier()
            .expect("verifier")
            .verify_client_cert(&leaf, std::slice::from_ref(&intermediate), now)
            .expect_err("the handshake refuses intermediates")
            .to_string();
        assert!(refused.contains("intermediate"), "{refused}");
        let expected = SpiffeId::node(SURREY, "surrey").expect("id");
        let refused = bundle
            .server_verifier(expected)
            .expect("verifier")
            .verify_server_cert(
                &leaf,
                std::slice::from_ref(&intermediate),
                &ServerName::try_from("localhost").expect("name"),
                &[],
                now,
            )
            .expect_err("a client refuses a server chain with intermediates")
            .to_string();
        assert!(refused.contains("intermediate"), "{refused}");

        // Even given the leaf alone, its issuer name is not enough: Surrey's
        // CA did not sign it.
        let refused = bundle
            .identity_of(&leaf)
            .expect_err("a leaf Surrey's CA did not sign speaks for no one")
            .to_string();
        assert!(
            refused.contains("no CA in the trust bundle signed"),
            "{refused}"
        );
    }

    #[test]
    fn a_leaf_issued_directly_by_its_domains_ca_is_accepted() {
        crate::install_crypto_provider();
        let surrey = ca(SURREY, "Surrey County Council");
        let victoria = ca("victoria.patchwork.au", "State of Victoria");
        let bundle = TrustBundle::new(
            vec![victoria.cert_der().clone(), surrey.cert_der().clone()],
            vec![],
        )
        .expect("bundle");
        let identity = SpiffeId::node(SURREY, "surrey").expect("id");
        let issued = surrey
            .issue(&LeafParams {
                identity: identity.clone(),
                dns_names: vec!["localhost".into()],
                ip_addresses: vec![],
                validity_days: 1,
            })
            .expect("issue");
        let chain = crate::certs_from_pem(issued.cert_pem.as_bytes()).expect("pem");
        assert_eq!(
            bundle
                .verify_client_chain(&chain, UnixTime::now())
                .expect("accepted"),
            identity
        );
        assert_eq!(bundle.identity_of(&chain[0]).expect("identity"), identity);
    }
}
