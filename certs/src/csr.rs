//! Certificate signing requests: a node, or a local client of a node's API, asking for a
//! certificate for a key it made itself, and reading such a request (self-signature
//! verified, names extracted) so the CA can sign it by its own policy.
//!
//! Reading a request yields only its public key and the names it asks for; nothing else in
//! it (basic constraints, key usages, extended key usages, other extensions, subject
//! attributes) ever reaches a certificate. `CertificateAuthority::sign_csr` puts the names
//! through the same leaf policy as `issue`.
//!
//! A request names its identity in its one URI SAN, `spiffe://<td>/node/<name>` or
//! `spiffe://<td>/client/<name>`. A request without a URI SAN is read as a node's, named by
//! its subject CN: a CN alone cannot say which kind it means, so a client request must
//! carry its URI SAN (and therefore its trust domain).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::{CertificateSigningRequestDer, DnsName};
use time::OffsetDateTime;
use x509_parser::asn1_rs::{Any, FromDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME;
use x509_parser::x509::AlgorithmIdentifier;

use crate::error::ia5;
use crate::{CertError, SpiffeId};

/// A syntactically valid trust domain, used only to check a node name on its own.
const NAME_CHECK_TRUST_DOMAIN: &str = "node-name.check";

/// Why a well-formed identity in this CA's trust domain is still not one it signs.
const SIGNABLE_IDENTITIES: &str = "this ca signs only node identities \
    spiffe://<trust-domain>/node/<name> and client identities spiffe://<trust-domain>/client/<name>";

/// The kinds of identity a CA signs requests for: the path segment after the trust domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A federation node, `spiffe://<td>/node/<name>`.
    Node,
    /// A local client of one node's API (a council's portal, its case-management
    /// integration), `spiffe://<td>/client/<name>`.
    Client,
}

impl IdentityKind {
    /// `node` or `client`, as in the SPIFFE path.
    pub fn path_segment(self) -> &'static str {
        match self {
            IdentityKind::Node => "node",
            IdentityKind::Client => "client",
        }
    }

    /// `spiffe://<trust_domain>/<kind>/<name>`.
    pub fn identity(self, trust_domain: &str, name: &str) -> Result<SpiffeId, CertError> {
        match self {
            IdentityKind::Node => SpiffeId::node(trust_domain, name),
            IdentityKind::Client => SpiffeId::client(trust_domain, name),
        }
    }

    /// The kind and name of an identity that is exactly `spiffe://<td>/node/<name>` or
    /// `spiffe://<td>/client/<name>`; `None` for any other.
    pub fn of(identity: &SpiffeId) -> Option<(IdentityKind, &str)> {
        match identity.path_segments() {
            [role, name] if role == IdentityKind::Node.path_segment() => {
                Some((IdentityKind::Node, name))
            }
            [role, name] if role == IdentityKind::Client.path_segment() => {
                Some((IdentityKind::Client, name))
            }
            _ => None,
        }
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path_segment())
    }
}

/// A fresh key and a request for a certificate for it, as PEM for the caller to store.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    /// PKCS#10 `CERTIFICATE REQUEST`; public, send it to the CA operator.
    pub csr_pem: String,
    /// PKCS#8; write it with mode 0600. It never needs to leave the requester.
    pub key_pem: String,
}

impl fmt::Debug for CertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateRequest")
            .field("csr_pem", &self.csr_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// What the operator allows when signing one request; everything else is CA policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsrPolicy {
    /// When set, the request must be for exactly this kind and name (in the CA's trust
    /// domain): a node request is refused when a client was expected, and the reverse.
    pub expected: Option<(IdentityKind, String)>,
    /// `1..=MAX_LEAF_VALIDITY_DAYS`.
    pub validity_days: u32,
}

impl CsrPolicy {
    /// Refuses `identity` unless it is the one the operator said to expect.
    pub(crate) fn check_expected(&self, identity: &SpiffeId) -> Result<(), CertError> {
        let Some((kind, name)) = &self.expected else {
            return Ok(());
        };
        match IdentityKind::of(identity) {
            Some((found, found_name)) if found == *kind && found_name == name => Ok(()),
            // Kept apart so the common mistake reads as plainly as it always has.
            Some((IdentityKind::Node, found_name)) if *kind == IdentityKind::Node => {
                Err(CertError::NodeNameMismatch {
                    requested: found_name.to_owned(),
                    expected: name.clone(),
                })
            }
            _ => Err(CertError::InvalidSpiffeId {
                value: identity.to_string(),
                reason: format!(
                    "the operator expected spiffe://{}/{kind}/{name}",
                    identity.trust_domain()
                ),
            }),
        }
    }
}

/// A certificate signed from a request; the key stayed with the requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCertificate {
    pub cert_pem: String,
    /// Lowercase hex, as `summarize_cert_der` reports it; the key for revocation.
    pub serial_hex: String,
    /// The one URI SAN written into the certificate.
    pub identity: SpiffeId,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The certified key's SubjectPublicKeyInfo, DER (the requester's key).
    pub public_key_der: Vec<u8>,
}

/// The SubjectPublicKeyInfo (DER) a request (PEM) asks to certify, after its
/// self-signature is verified: a CA checks it against keys it must never certify again
/// before signing anything.
pub fn csr_public_key_der(csr_pem: &str) -> Result<Vec<u8>, CertError> {
    let der = csr_der_from_pem(csr_pem)?;
    Ok(read_csr(&der)?.spki_der)
}

/// Makes a fresh P-256 key and a request for a node certificate for it; see
/// `request_certificate`.
pub fn request_node_certificate(
    node_name: &str,
    trust_domain: Option<&str>,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
) -> Result<CertificateRequest, CertError> {
    request_certificate(
        IdentityKind::Node,
        node_name,
        trust_domain,
        dns_names,
        ip_addresses,
    )
}

/// Makes a fresh P-256 key and a request for a certificate of `kind` named `name`.
///
/// The subject CN is the name. With a trust domain, the request also asks for the URI SAN
/// `spiffe://<trust_domain>/<kind>/<name>`; a node request without one leaves the CA to take
/// the name from the CN and the identity from its own trust domain. A client request needs
/// the trust domain (the CA reads a bare CN as a node name). DNS and IP SANs are asked for
/// as given; a client, which only dials, needs none.
pub fn request_certificate(
    kind: IdentityKind,
    name: &str,
    trust_domain: Option<&str>,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
) -> Result<CertificateRequest, CertError> {
    let identity = match (kind, trust_domain) {
        (IdentityKind::Node, trust_domain) => {
            check_node_name(name)?;
            trust_domain
                .map(|trust_domain| SpiffeId::node(trust_domain, name))
                .transpose()?
        }
        (IdentityKind::Client, Some(trust_domain)) => Some(SpiffeId::client(trust_domain, name)?),
        (IdentityKind::Client, None) => {
            return Err(CertError::InvalidTrustDomain {
                value: String::new(),
                reason: "a client certificate request must name its trust domain, because the \
                         ca reads a request without a URI SAN as a node's"
                    .to_owned(),
            });
        }
    };
    let mut subject_alt_names = Vec::with_capacity(1 + dns_names.len() + ip_addresses.len());
    if let Some(identity) = identity {
        subject_alt_names.push(SanType::URI(ia5(identity.to_string())?));
    }
    for name in dns_names {
        check_dns_name(name)?;
        subject_alt_names.push(SanType::DnsName(ia5(name.clone())?));
    }
    subject_alt_names.extend(ip_addresses.iter().copied().map(SanType::IpAddress));

    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name;
    params.subject_alt_names = subject_alt_names;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let csr = params.serialize_request(&key)?;
    Ok(CertificateRequest {
        csr_pem: csr.pem()?,
        key_pem: key.serialize_pem(),
    })
}

/// Checks a node name as the one path segment after `node/` in a SPIFFE id.
pub(crate) fn check_node_name(name: &str) -> Result<(), CertError> {
    match SpiffeId::node(NAME_CHECK_TRUST_DOMAIN, name) {
        Ok(_) => Ok(()),
        Err(CertError::InvalidSpiffeId { reason, .. }) => Err(CertError::InvalidNodeName {
            value: name.to_owned(),
            reason,
        }),
        Err(other) => Err(other),
    }
}

fn check_dns_name(name: &str) -> Result<(), CertError> {
    match DnsName::try_from(name) {
        Ok(_) => Ok(()),
        Err(_) => Err(CertError::InvalidDnsName(name.to_owned())),
    }
}

/// The one `CERTIFICATE REQUEST` block of `pem`.
pub(crate) fn csr_der_from_pem(
    pem: &str,
) -> Result<CertificateSigningRequestDer<'static>, CertError> {
    let mut csrs = Vec::new();
    for item in rustls_pemfile::read_all(&mut pem.as_bytes()) {
        if let rustls_pemfile::Item::Csr(csr) =
            item.map_err(|err| CertError::Pem(format!("{err:?}")))?
        {
            csrs.push(csr);
        }
    }
    match csrs.len() {
        0 => Err(CertError::NoCsrInPem),
        1 => Ok(csrs.remove(0)),
        n => Err(CertError::CsrCount(n)),
    }
}

/// What a request asks for, after its self-signature was verified.
pub(crate) struct VerifiedCsr {
    /// The requester's key, in the form rcgen writes into a certificate.
    pub(crate) public_key: rcgen::SubjectPublicKeyInfo,
    /// The request's SubjectPublicKeyInfo, DER.
    pub(crate) spki_der: Vec<u8>,
    pub(crate) uris: Vec<String>,
    pub(crate) common_names: Vec<String>,
    pub(crate) dns_names: Vec<String>,
    pub(crate) ip_addresses: Vec<IpAddr>,
}

impl VerifiedCsr {
    /// The identity asked for: the URI SAN, which must be a node or client identity in
    /// `trust_domain`, or without one the subject CN as a node name in `trust_domain`.
    pub(crate) fn identity(&self, trust_domain: &str) -> Result<SpiffeId, CertError> {
        match self.uris.as_slice() {
            [] => match self.common_names.as_slice() {
                [name] => {
                    check_node_name(name)?;
                    SpiffeId::node(trust_domain, name)
                }
                others => Err(CertError::CsrCommonNameCount(others.len())),
            },
            [uri] => {
                let identity: SpiffeId = uri.parse()?;
                if identity.trust_domain() != trust_domain {
                    return Err(CertError::TrustDomainMismatch {
                        identity: identity.to_string(),
                        requested: identity.trust_domain().to_owned(),
                        authority: trust_domain.to_owned(),
                    });
                }
                if IdentityKind::of(&identity).is_none() {
                    return Err(CertError::InvalidSpiffeId {
                        value: identity.to_string(),
                        reason: SIGNABLE_IDENTITIES.to_owned(),
                    });
                }
                Ok(identity)
            }
            many => Err(CertError::CsrUriSanCount(many.to_vec())),
        }
    }
}

/// Parses a DER request, verifies its self-signature and extracts what it asks for.
pub(crate) fn read_csr(der: &[u8]) -> Result<VerifiedCsr, CertError> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|err| CertError::InvalidCsr(err.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::InvalidCsr(format!(
            "{} trailing bytes after the request",
            rest.len()
        )));
    }
    verify_self_signature(der, &csr)?;

    let info = &csr.certification_request_info;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw).map_err(|_| {
        CertError::UnsupportedCsrAlgorithm {
            key_algorithm: describe_algorithm(&info.subject_pki.algorithm),
            signature_algorithm: describe_algorithm(&csr.signature_algorithm),
        }
    })?;
    let common_names = info
        .subject
        .iter_common_name()
        .map(|cn| {
            cn.as_str().map(str::to_owned).map_err(|_| {
                CertError::InvalidCsr("a subject common name is not a utf-8 string".to_owned())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut names = VerifiedCsr {
        public_key,
        spki_der: info.subject_pki.raw.to_vec(),
        uris: Vec::new(),
        common_names,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
    };
    // Every extension request attribute counts, so a second one cannot hide a SAN.
    for attribute in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(request) = attribute.parsed_attribute() else {
            continue;
        };
        for extension in &request.extensions {
            if extension.oid != OID_X509_EXT_SUBJECT_ALT_NAME {
                // Everything else in a request is ignored: the CA decides it.
                continue;
            }
            // A SAN we cannot read must not silently fall back to the subject CN.
            let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() else {
                return Err(CertError::InvalidCsr(
                    "subject alternative name extension is malformed".to_owned(),
                ));
            };
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) => names.uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns)
                        if !names.dns_names.iter().any(|known| known == dns) =>
                    {
                        names.dns_names.push((*dns).to_owned());
                    }
                    GeneralName::IPAddress(octets) => {
                        let ip = ip_from_octets(octets)?;
                        if !names.ip_addresses.contains(&ip) {
                            names.ip_addresses.push(ip);
                        }
                    }
                    // E-mail, directory names and the like are not part of an identity.
                    _ => {}
                }
            }
        }
    }
    Ok(names)
}

/// Checks the request's signature with the public key it carries, using the same
/// signature algorithms rustls accepts in a certificate chain.
fn verify_self_signature(der: &[u8], csr: &X509CertificationRequest<'_>) -> Result<(), CertError> {
    let malformed = |what: &str| CertError::InvalidCsr(format!("malformed {what}"));
    // webpki compares algorithm identifiers as DER without the outer SEQUENCE header.
    let (_, request) = Any::from_der(der).map_err(|_| malformed("request"))?;
    let (after_info, _) = Any::from_der(request.data).map_err(|_| malformed("request info"))?;
    let (_, signature_alg) =
        Any::from_der(after_info).map_err(|_| malformed("signature algorithm"))?;
    let info = &csr.certification_request_info;
    let (_, spki) = Any::from_der(info.subject_pki.raw).map_err(|_| malformed("public key"))?;
    let (_, key_alg) = Any::from_der(spki.data).map_err(|_| malformed("public key algorithm"))?;

    let algorithms = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    let algorithm = algorithms
        .iter()
        .find(|alg| {
            alg.public_key_alg_id().as_ref() == key_alg.data
                && alg.signature_alg_id().as_ref() == signature_alg.data
        })
        .ok_or_else(|| CertError::UnsupportedCsrAlgorithm {
            key_algorithm: describe_algorithm(&info.subject_pki.algorithm),
            signature_algorithm: describe_algorithm(&csr.signature_algorithm),
        })?;
    algorithm
        .verify_signature(
            info.subject_pki.subject_public_key.data.as_ref(),
            info.raw,
            csr.signature_value.data.as_ref(),
        )
        .map_err(|_| CertError::CsrSignature)
}

/// An algorithm's OID, with the curve OID for EC keys.
fn describe_algorithm(alg: &AlgorithmIdentifier<'_>) -> String {
    let oid = alg.algorithm.to_id_string();
    match alg.parameters.as_ref().and_then(|p| p.as_oid().ok()) {
        Some(param) => format!("{oid} {}", param.to_id_string()),
        None => oid,
    }
}

fn ip_from_octets(octets: &[u8]) -> Result<IpAddr, CertError> {
    if let Ok(v4) = <[u8; 4]>::try_from(octets) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(octets) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(CertError::IpAddressSan(octets.len()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use rcgen::{
        CustomExtension, ExtendedKeyUsagePurpose, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
        PKCS_ED25519, PublicKeyData, SignatureAlgorithm,
    };
    use rustls::RootCertStore;
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use time::Duration;

    use super::*;
    use crate::{
        CaParams, CertificateAuthority, LeafParams, certs_from_pem, identity_from_cert_der,
        install_crypto_provider, summarize_cert_der,
    };

    const TD: &str = "patchwork.test";
    const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate(&CaParams {
            trust_domain: TD.to_owned(),
            display_name: "Patchwork Test CA".to_owned(),
            validity_days: 30,
        })
        .expect("generate ca")
    }

    fn policy(days: u32) -> CsrPolicy {
        CsrPolicy {
            expected: None,
            validity_days: days,
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        let mut certs = certs_from_pem(pem.as_bytes()).expect("pem holds a certificate");
        assert_eq!(certs.len(), 1);
        certs.remove(0)
    }

    /// A CSR made by hand with rcgen, asking for whatever the test wants.
    fn csr_with(
        common_names: &[&str],
        sans: Vec<SanType>,
        alg: &'static SignatureAlgorithm,
        extra: impl FnOnce(&mut CertificateParams),
    ) -> (String, KeyPair) {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        for cn in common_names {
            name.push(DnType::CommonName, *cn);
        }
        params.distinguished_name = name;
        params.subject_alt_names = sans;
        extra(&mut params);
        let key = KeyPair::generate_for(alg).expect("key");
        let csr = params.serialize_request(&key).expect("csr");
        (csr.pem().expect("pem"), key)
    }

    fn uri(value: &str) -> SanType {
        SanType::URI(ia5(value.to_owned()).expect("ascii"))
    }

    fn extension_oids(der: &[u8]) -> BTreeSet<String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse");
        cert.extensions()
            .iter()
            .map(|ext| ext.oid.to_id_string())
            .collect()
    }

    #[test]
    fn requested_certificate_is_signed_for_the_requested_names() {
        let ca = ca();
        let dns = vec!["alpha.patchwork.test".to_owned()];
        let ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let request = request_node_certificate("alpha", Some(TD), &dns, &ips).expect("request");
        assert!(
            request
                .csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert!(!format!("{request:?}").contains("PRIVATE KEY"));

        let signed = ca.sign_csr(&request.csr_pem, &policy(30)).expect("sign");
        let leaf = der(&signed.cert_pem);
        let expected = SpiffeId::node(TD, "alpha").expect("id");
        assert_eq!(signed.identity, expected);
        assert_eq!(identity_from_cert_der(&leaf).expect("identity"), expected);

        let summary = summarize_cert_der(&leaf).expect("summary");
        assert_eq!(summary.subject, "CN=alpha");
        assert_eq!(summary.dns_names, dns);
        assert_eq!(summary.ip_addresses, ips);
        assert!(!summary.is_ca && summary.server_auth && summary.client_auth);
        assert_eq!(summary.serial_hex, signed.serial_hex);
        assert_eq!(summary.not_before, signed.not_before);
        assert_eq!(summary.not_after, signed.not_after);
        assert_eq!(
            signed.not_after - signed.not_before,
            Duration::days(30) + Duration::minutes(5)
        );

        // The certificate is for the requester's key, which never went to the CA.
        let key = KeyPair::from_pem(&request.key_pem).expect("requester key");
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );

        install_crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).expect("anchor");
        WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .expect("verifier")
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .expect("signed leaf chains to the ca");
    }

    #[test]
    fn request_without_trust_domain_is_named_by_its_common_name() {
        let ca = ca();
        let request = request_node_certificate("beta", None, &[], &[]).expect("request");
        let signed = ca.sign_csr(&request.csr_pem, &policy(7)).expect("sign");
        assert_eq!(
            signed.identity.to_string(),
            "spiffe://patchwork.test/node/beta"
        );
        let summary = summarize_cert_der(&der(&signed.cert_pem)).expect("summary");
        assert!(summary.dns_names.is_empty() && summary.ip_addresses.is_empty());
    }

    #[test]
    fn csr_asking_for_a_ca_comes_out_as_a_policy_leaf() {
        let ca = ca();
        let (pem, _) = csr_with(
            &["evil"],
            vec![
                uri("spiffe://patchwork.test/node/alpha"),
                SanType::DnsName(ia5("alpha.patchwork.test".to_owned()).expect("ascii")),
                SanType::Rfc822Name(ia5("ops@example.test".to_owned()).expect("ascii")),
            ],
            &PKCS_ECDSA_P256_SHA256,
            |params| {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "Evil Corp");
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::Any,
                    ExtendedKeyUsagePurpose::CodeSigning,
                ];
                // basicConstraints critical CA:TRUE, which rcgen will not put in a CSR itself.
                let mut ca_true = CustomExtension::from_oid_content(
                    BASIC_CONSTRAINTS,
                    vec![0x30, 0x03, 0x01, 0x01, 0xff],
                );
                ca_true.set_criticality(true);
                params.custom_extensions = vec![ca_true];
            },
        );
        let signed = ca.sign_csr(&pem, &policy(30)).expect("signed by policy");
        let leaf = der(&signed.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse");

        let constraints = cert.basic_constraints().expect("ok").expect("explicit");
        assert!(!constraints.value.ca, "CA:FALSE whatever the request asked");
        let usage = cert.key_usage().expect("ok").expect("present").value;
        assert!(usage.digital_signature());
        assert!(!usage.key_cert_sign() && !usage.crl_sign());
        let eku = cert
            .extended_key_usage()
            .expect("ok")
            .expect("present")
            .value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!eku.any && !eku.code_signing && eku.other.is_empty());
        assert_eq!(cert.subject().to_string(), "CN=alpha");

        let sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("ok")
            .expect("present")
            .value
            .general_names
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            sans,
            [
                "URI(spiffe://patchwork.test/node/alpha)",
                "DNSName(alpha.patchwork.test)"
            ]
        );

        // Exactly the extensions `issue` writes, none from the request.
        let issued = ca
            .issue(&LeafParams {
                identity: SpiffeId::node(TD, "alpha").expect("id"),
                dns_names: vec!["alpha.patchwork.test".to_owned()],
                ip_addresses: Vec::new(),
                validity_days: 30,
            })
            .expect("issue");
        assert_eq!(
            extension_oids(&leaf),
            extension_oids(&der(&issued.cert_pem))
        );
    }

    #[test]
    fn foreign_trust_domain_is_refused() {
        let ca = ca();
        let request =
            request_node_certificate("mallory", Some("other.test"), &[], &[]).expect("request");
        let err = ca
            .sign_csr(&request.csr_pem, &policy(30))
            .expect_err("foreign trust domain");
        assert_eq!(
            err.to_string(),
            "identity spiffe://other.test/node/mallory is in trust domain \"other.test\", \
             but this ca issues for \"patchwork.test\""
        );
    }

    #[test]
    fn identities_other_than_one_node_or_client_are_refused() {
        let ca = ca();
        let (admin, _) = csr_with(
            &["ops"],
            vec![uri("spiffe://patchwork.test/admin/ops")],
            &PKCS_ECDSA_P256_SHA256,
            |_| {},
        );
        let err = ca.sign_csr(&admin, &policy(30)).expect_err("admin id");
        assert_eq!(
            err.to_string(),
            "invalid spiffe id \"spiffe://patchwork.test/admin/ops\": this ca signs only node \
             identities spiffe://<trust-domain>/node/<name> and client identities \
             spiffe://<trust-domain>/client/<name>"
        );

        let (two, _) = csr_with(
            &["a"],
            vec![
                uri("spiffe://patchwork.test/node/a"),
                uri("spiffe://patchwork.test/node/b"),
            ],
            &PKCS_ECDSA_P256_SHA256,
            |_| {},
        );
        let err = ca.sign_csr(&two, &policy(30)).expect_err("two uris");
        assert_eq!(
            err.to_string(),
            "certificate signing request asks for 2 URI SANs (spiffe://patchwork.test/node/a, \
             spiffe://patchwork.test/node/b), expected at most one"
        );

        let (https, _) = csr_with(
            &["a"],
            vec![uri("https://patchwork.test/node/a")],
            &PKCS_ECDSA_P256_SHA256,
            |_| {},
        );
        let err = ca.sign_csr(&https, &policy(30)).expect_err("not spiffe");
        assert!(
            matches!(
                err,
                CertError::InvalidSpiffeId { ref value, .. }
                    if value == "https://patchwork.test/node/a"
            ),
            "{err}"
        );

        for nested in [
            "spiffe://patchwork.test/node/a/b",
            "spiffe://patchwork.test/client/a/b",
            "spiffe://patchwork.test/client",
        ] {
            let (deep, _) = csr_with(&["a"], vec![uri(nested)], &PKCS_ECDSA_P256_SHA256, |_| {});
            let err = ca.sign_csr(&deep, &policy(30)).expect_err("nested path");
            assert!(
                matches!(
                    err,
                    CertError::InvalidSpiffeId { ref value, ref reason }
                        if value == nested && reason == SIGNABLE_IDENTITIES
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn common_name_fallback_is_validated() {
        let ca = ca();
        let (spaced, _) = csr_with(&["a b"], Vec::new(), &PKCS_ECDSA_P256_SHA256, |_| {});
        let err = ca.sign_csr(&spaced, &policy(30)).expect_err("space");
        assert_eq!(
            err.to_string(),
            "invalid node name \"a b\": character ' ' not allowed, expected [A-Za-z0-9._-]"
        );
        let (none, _) = csr_with(&[], Vec::new(), &PKCS_ECDSA_P256_SHA256, |_| {});
        let err = ca.sign_csr(&none, &policy(30)).expect_err("no name");
        assert_eq!(
            err.to_string(),
            "certificate signing request has no URI SAN and 0 subject common names, \
             expected exactly one naming the node"
        );
    }

    #[test]
    fn tampered_csr_is_refused() {
        let ca = ca();
        let request = request_node_certificate("alpha", Some(TD), &[], &[]).expect("request");
        let original = csr_der_from_pem(&request.csr_pem).expect("der").to_vec();
        ca.sign_csr_der(&original, &policy(30))
            .expect("the untouched request signs");

        // Rename the node inside the signed part: the signature no longer matches.
        let mut renamed = original.clone();
        let at = renamed
            .windows(5)
            .position(|window| window == b"alpha")
            .expect("subject cn in der");
        renamed[at + 4] = b'b';
        let err = ca
            .sign_csr_der(&renamed, &policy(30))
            .expect_err("altered subject");
        assert!(matches!(err, CertError::CsrSignature), "{err}");
        assert_eq!(
            err.to_string(),
            "certificate signing request signature does not verify with its own public key \
             (the request was altered or is not signed by its key)"
        );

        // Alter the signature itself (its last byte is inside the ECDSA `s` integer).
        let mut resigned = original.clone();
        let last = resigned.len() - 1;
        resigned[last] ^= 0x01;
        let err = ca
            .sign_csr_der(&resigned, &policy(30))
            .expect_err("altered signature");
        assert!(matches!(err, CertError::CsrSignature), "{err}");

        let err = ca
            .sign_csr_der(&original[..original.len() - 3], &policy(30))
            .expect_err("truncated");
        assert!(matches!(err, CertError::InvalidCsr(_)), "{err}");
    }

    #[test]
    fn expected_node_name_must_match() {
        let ca = ca();
        let request = request_node_certificate("alpha", Some(TD), &[], &[]).expect("request");
        let mut policy = policy(30);
        policy.expected = Some((IdentityKind::Node, "beta".to_owned()));
        let err = ca
            .sign_csr(&request.csr_pem, &policy)
            .expect_err("other node");
        assert_eq!(
            err.to_string(),
            "certificate signing request is for node \"alpha\", but node \"beta\" was expected"
        );
        policy.expected = Some((IdentityKind::Node, "alpha".to_owned()));
        assert!(ca.sign_csr(&request.csr_pem, &policy).is_ok());
    }

    #[test]
    fn client_request_is_signed_with_its_client_identity() {
        let ca = ca();
        let request = request_certificate(IdentityKind::Client, "portal", Some(TD), &[], &[])
            .expect("request");
        let mut policy = policy(30);
        policy.expected = Some((IdentityKind::Client, "portal".to_owned()));
        let signed = ca.sign_csr(&request.csr_pem, &policy).expect("sign");
        let leaf = der(&signed.cert_pem);
        let expected = SpiffeId::client(TD, "portal").expect("id");
        assert_eq!(signed.identity, expected);
        assert_eq!(identity_from_cert_der(&leaf).expect("identity"), expected);
        assert_eq!(
            IdentityKind::of(&signed.identity),
            Some((IdentityKind::Client, "portal"))
        );

        let summary = summarize_cert_der(&leaf).expect("summary");
        assert_eq!(summary.subject, "CN=portal");
        assert!(summary.dns_names.is_empty() && summary.ip_addresses.is_empty());
        assert!(!summary.is_ca && summary.server_auth && summary.client_auth);
        let key = KeyPair::from_pem(&request.key_pem).expect("requester key");
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
        assert_eq!(
            cert.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
        // Exactly the extensions `issue` writes for the same identity.
        let issued = ca
            .issue(&LeafParams {
                identity: expected,
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
                validity_days: 30,
            })
            .expect("issue");
        assert_eq!(
            extension_oids(&leaf),
            extension_oids(&der(&issued.cert_pem))
        );

        install_crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).expect("anchor");
        WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .expect("verifier")
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .expect("signed client leaf chains to the ca");
    }

    #[test]
    fn client_request_for_a_foreign_trust_domain_is_refused() {
        let ca = ca();
        let request =
            request_certificate(IdentityKind::Client, "portal", Some("other.test"), &[], &[])
                .expect("request");
        let err = ca
            .sign_csr(&request.csr_pem, &policy(30))
            .expect_err("foreign trust domain");
        assert_eq!(
            err.to_string(),
            "identity spiffe://other.test/client/portal is in trust domain \"other.test\", \
             but this ca issues for \"patchwork.test\""
        );
    }

    #[test]
    fn client_request_needs_a_trust_domain_and_a_valid_name() {
        let err = request_certificate(IdentityKind::Client, "portal", None, &[], &[])
            .expect_err("no trust domain");
        assert_eq!(
            err.to_string(),
            "invalid trust domain \"\": a client certificate request must name its trust \
             domain, because the ca reads a request without a URI SAN as a node's"
        );
        let err = request_certificate(IdentityKind::Client, "a/b", Some(TD), &[], &[])
            .expect_err("slash");
        assert_eq!(
            err.to_string(),
            "invalid spiffe id \"spiffe://patchwork.test/client/a/b\": \
             character '/' not allowed, expected [A-Za-z0-9._-]"
        );
    }

    #[test]
    fn expected_kind_and_name_must_both_match() {
        let ca = ca();
        let client = request_certificate(IdentityKind::Client, "ops", Some(TD), &[], &[])
            .expect("client request");
        let node = request_node_certificate("ops", Some(TD), &[], &[]).expect("node request");
        let bare = request_node_certificate("ops", None, &[], &[]).expect("cn-only request");
        let expecting = |kind, name: &str| CsrPolicy {
            expected: Some((kind, name.to_owned())),
            validity_days: 30,
        };
        let refused = |csr: &str, policy: &CsrPolicy| {
            ca.sign_csr(csr, policy)
                .expect_err("identity not the expected one")
                .to_string()
        };

        // A client request is not a node's of the same name, and the reverse.
        assert_eq!(
            refused(&client.csr_pem, &expecting(IdentityKind::Node, "ops")),
            "invalid spiffe id \"spiffe://patchwork.test/client/ops\": \
             the operator expected spiffe://patchwork.test/node/ops"
        );
        assert_eq!(
            refused(&node.csr_pem, &expecting(IdentityKind::Client, "ops")),
            "invalid spiffe id \"spiffe://patchwork.test/node/ops\": \
             the operator expected spiffe://patchwork.test/client/ops"
        );
        // A request named only by its CN is a node's, so it never passes as a client.
        assert_eq!(
            refused(&bare.csr_pem, &expecting(IdentityKind::Client, "ops")),
            "invalid spiffe id \"spiffe://patchwork.test/node/ops\": \
             the operator expected spiffe://patchwork.test/client/ops"
        );
        assert_eq!(
            refused(&client.csr_pem, &expecting(IdentityKind::Client, "portal")),
            "invalid spiffe id \"spiffe://patchwork.test/client/ops\": \
             the operator expected spiffe://patchwork.test/client/portal"
        );

        let signed = ca
            .sign_csr(&client.csr_pem, &expecting(IdentityKind::Client, "ops"))
            .expect("the expected client");
        assert_eq!(
            signed.identity.to_string(),
            "spiffe://patchwork.test/client/ops"
        );
        let signed = ca
            .sign_csr(&bare.csr_pem, &expecting(IdentityKind::Node, "ops"))
            .expect("the expected node");
        assert_eq!(
            signed.identity.to_string(),
            "spiffe://patchwork.test/node/ops"
        );
    }

    #[test]
    fn identity_kind_reads_exactly_node_and_client_ids() {
        for (text, expected) in [
            ("spiffe://td/node/a", Some((IdentityKind::Node, "a"))),
            ("spiffe://td/client/a", Some((IdentityKind::Client, "a"))),
            ("spiffe://td/admin/a", None),
            ("spiffe://td/client/a/b", None),
            ("spiffe://td/node", None),
        ] {
            let id: SpiffeId = text.parse().expect("valid spiffe id");
            assert_eq!(IdentityKind::of(&id), expected, "{text}");
        }
        for kind in [IdentityKind::Node, IdentityKind::Client] {
            let id = kind.identity("td", "a").expect("id");
            assert_eq!(id.to_string(), format!("spiffe://td/{kind}/a"));
            assert_eq!(IdentityKind::of(&id), Some((kind, "a")));
        }
    }

    #[test]
    fn validity_and_names_are_checked_by_leaf_policy() {
        let ca = ca();
        let request = request_node_certificate("alpha", Some(TD), &[], &[]).expect("request");
        for days in [0, crate::MAX_LEAF_VALIDITY_DAYS + 1] {
            let err = ca
                .sign_csr(&request.csr_pem, &policy(days))
                .expect_err("days out of range");
            assert_eq!(
                err.to_string(),
                format!("validity_days {days} is out of range, expected 1..=397")
            );
        }
        let (wildcard, _) = csr_with(
            &["alpha"],
            vec![SanType::DnsName(
                ia5("*.patchwork.test".to_owned()).expect("ascii"),
            )],
            &PKCS_ECDSA_P256_SHA256,
            |_| {},
        );
        let err = ca.sign_csr(&wildcard, &policy(30)).expect_err("wildcard");
        assert_eq!(err.to_string(), "invalid dns name \"*.patchwork.test\"");
    }

    #[test]
    fn csr_for_the_ca_key_is_refused() {
        let ca = ca();
        let ca_key = KeyPair::from_pem(&ca.key_pem()).expect("ca key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "alpha");
        let csr = params.serialize_request(&ca_key).expect("csr");
        let err = ca
            .sign_csr(&csr.pem().expect("pem"), &policy(30))
            .expect_err("ca key");
        assert!(matches!(err, CertError::CsrUsesCaKey), "{err}");
    }

    #[test]
    fn other_key_algorithms_are_signed_for_their_own_key() {
        let ca = ca();
        for alg in [&PKCS_ED25519, &PKCS_ECDSA_P384_SHA384] {
            let (pem, key) = csr_with(
                &["alpha"],
                vec![uri("spiffe://patchwork.test/node/alpha")],
                alg,
                |_| {},
            );
            let signed = ca.sign_csr(&pem, &policy(30)).expect("sign");
            let leaf = der(&signed.cert_pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
            assert_eq!(
                cert.public_key().raw,
                key.subject_public_key_info().as_slice()
            );
        }
    }

    #[test]
    fn request_inputs_are_checked() {
        let err = request_node_certificate("a/b", Some(TD), &[], &[]).expect_err("slash");
        assert_eq!(
            err.to_string(),
            "invalid node name \"a/b\": character '/' not allowed, expected [A-Za-z0-9._-]"
        );
        let err = request_node_certificate("a", Some("Bad"), &[], &[]).expect_err("td");
        assert!(matches!(err, CertError::InvalidTrustDomain { .. }), "{err}");
        let err =
            request_node_certificate("a", None, &["bad name".to_owned()], &[]).expect_err("dns");
        assert_eq!(err.to_string(), "invalid dns name \"bad name\"");
    }

    #[test]
    fn csr_pem_must_hold_one_request() {
        let ca = ca();
        let request = request_node_certificate("alpha", None, &[], &[]).expect("request");
        let err = ca.sign_csr("", &policy(30)).expect_err("empty");
        assert!(matches!(err, CertError::NoCsrInPem), "{err}");
        let err = ca
            .sign_csr(ca.cert_pem(), &policy(30))
            .expect_err("a certificate");
        assert!(matches!(err, CertError::NoCsrInPem), "{err}");
        let two = format!("{}{}", request.csr_pem, request.csr_pem);
        let err = ca.sign_csr(&two, &policy(30)).expect_err("two");
        assert_eq!(
            err.to_string(),
            "pem input holds 2 certificate signing requests, expected exactly one"
        );
    }
}
