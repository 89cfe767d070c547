//! The certificate authority of one trust domain: minting its root and issuing leaves by policy.
//!
//! Everything that makes a leaf trustworthy (CA:FALSE, key and extended key usages, the one
//! URI SAN, serial, validity) is decided here, in `leaf_certificate_params`, and never taken
//! from the requester. `sign_csr` takes only the public key and the names from a CSR and goes
//! through the same function. `crl` signs the revocation lists peers check leaves against.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, DnsName};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::ParsedExtension;

use crate::crl::{RevokedCertificate, serial_bytes};
use crate::csr::{CsrPolicy, SignedCertificate, csr_der_from_pem, read_csr};
use crate::error::ia5;
use crate::identity::{is_ca, parse_certificate, uri_sans, validate_trust_domain};
use crate::{CertError, SpiffeId, certs_from_pem};

/// Longest leaf validity we issue (the CA/Browser Forum ceiling; ours are usually far shorter).
pub const MAX_LEAF_VALIDITY_DAYS: u32 = 397;
/// Longest CA validity we mint; also keeps every date inside what X.509 can encode.
pub const MAX_CA_VALIDITY_DAYS: u32 = 36_500;
/// Backdating of `not_before`, so a peer whose clock is slightly behind accepts a fresh cert.
const CLOCK_SKEW: Duration = Duration::minutes(5);
const SERIAL_LEN: usize = 16;
/// RFC 5280 upper bound for a common name.
const MAX_DISPLAY_NAME_LEN: usize = 64;
const SPIFFE_SCHEME: &str = "spiffe://";

/// What to mint a new trust-domain root with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaParams {
    /// Bare trust domain, e.g. `patchwork.example`; written as the URI SAN `spiffe://<td>`.
    pub trust_domain: String,
    /// Subject CN and O of the CA certificate.
    pub display_name: String,
    /// `1..=MAX_CA_VALIDITY_DAYS`.
    pub validity_days: u32,
}

/// What a leaf is for. Everything else about the certificate is CA policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafParams {
    /// Written as the one URI SAN; must be in the CA's trust domain.
    pub identity: SpiffeId,
    /// Extra DNS SANs, so tonic/rustls clients can check a host name.
    pub dns_names: Vec<String>,
    /// Extra IP SANs, for peers dialled by address.
    pub ip_addresses: Vec<IpAddr>,
    /// `1..=MAX_LEAF_VALIDITY_DAYS`; ignored by `issue_with_validity`.
    pub validity_days: u32,
}

/// A freshly issued leaf and its private key, as PEM for the caller to store.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    /// PKCS#8; write it with mode 0600.
    pub key_pem: String,
    /// Lowercase hex, as `summarize_cert_der` reports it; the key for revocation.
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("serial_hex", &self.serial_hex)
            .field("not_after", &self.not_after)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The root of one trust domain: its key, its self-signed certificate and the policy it issues by.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    trust_domain: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Mints a new self-signed P-256 root for `params.trust_domain`.
    ///
    /// The trust domain is written as the URI SAN `spiffe://<trust_domain>` (the SPIFFE
    /// trust-domain id), which is where `from_pem` recovers it from.
    pub fn generate(params: &CaParams) -> Result<Self, CertError> {
        validate_trust_domain(&params.trust_domain)?;
        check_display_name(&params.display_name)?;
        check_days("validity_days", params.validity_days, MAX_CA_VALIDITY_DAYS)?;
        let (not_before, not_after) = window_from_now(params.validity_days);

        let mut distinguished_name = DistinguishedName::new();
        distinguished_name.push(DnType::CommonName, params.display_name.as_str());
        distinguished_name.push(DnType::OrganizationName, params.display_name.as_str());
        let (serial, _) = random_serial()?;

        let mut cert_params = CertificateParams::default();
        cert_params.distinguished_name = distinguished_name;
        // pathlen 0: this root signs leaves only, never an intermediate.
        cert_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        cert_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        cert_params.subject_alt_names = vec![SanType::URI(ia5(format!(
            "{SPIFFE_SCHEME}{}",
            params.trust_domain
        ))?)];
        cert_params.serial_number = Some(serial);
        cert_params.not_before = not_before;
        cert_params.not_after = not_after;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = cert_params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(cert_params, key),
            trust_domain: params.trust_domain.clone(),
        })
    }

    /// Reloads a CA written out earlier (`cert_pem()` and `key_pem()`).
    ///
    /// Refuses a certificate that is not a CA, one without the `spiffe://<trust-domain>`
    /// URI SAN, and a key that does not belong to the certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let certs = certs_from_pem(cert_pem.as_bytes())?;
        let [cert_der] = <[CertificateDer<'static>; 1]>::try_from(certs)
            .map_err(|certs| CertError::CertificateCount(certs.len()))?;

        let (subject, trust_domain, spki) = inspect_ca_certificate(&cert_der)?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|err| CertError::InvalidPrivateKey(err.to_string()))?;
        if spki != key.subject_public_key_info() {
            return Err(CertError::KeyMismatch { subject });
        }

        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            cert_der,
            trust_domain,
        })
    }

    /// The CA certificate as PEM (what `from_pem` was given, or what `generate` produced).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER, e.g. for a rustls `RootCertStore`.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key as PKCS#8 PEM; the caller writes it with mode 0600.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The trust domain this CA issues for, e.g. `patchwork.example`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues a leaf with a fresh P-256 key, valid from five minutes ago for
    /// `req.validity_days` days.
    pub fn issue(&self, req: &LeafParams) -> Result<IssuedCertificate, CertError> {
        check_days("validity_days", req.validity_days, MAX_LEAF_VALIDITY_DAYS)?;
        let (not_before, not_after) = window_from_now(req.validity_days);
        self.issue_with_validity(req, not_before, not_after)
    }

    /// Like `issue`, with an explicit validity window instead of `req.validity_days`.
    ///
    /// Meant for tests that need expired or not-yet-valid certificates; the window must
    /// be non-empty but is otherwise not limited.
    pub fn issue_with_validity(
        &self,
        req: &LeafParams,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCertificate, CertError> {
        let (params, serial_hex) = self.leaf_certificate_params(req, not_before, not_after)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = self.sign_leaf(&params, &key)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial_hex,
            not_after: params.not_after,
        })
    }

    /// Signs a certificate signing request (PEM) by this CA's policy, not by what it asks for.
    ///
    /// The request's self-signature must verify. From it come only the public key, the
    /// identity and the DNS/IP SANs (validated like `issue`'s): the identity is the request's
    /// one URI SAN, which must be `spiffe://<this trust domain>/node/<name>` or
    /// `.../client/<name>`, or without a URI SAN its subject CN as a node name. A foreign
    /// trust domain, another kind of identity, several URI SANs, or an identity other than
    /// `policy.expected` are refused. Everything else (CA:FALSE, key usages, EKUs, serial,
    /// validity) is the same leaf policy as `issue`, whatever the request asks.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        policy: &CsrPolicy,
    ) -> Result<SignedCertificate, CertError> {
        let der = csr_der_from_pem(csr_pem)?;
        self.sign_csr_der(&der, policy)
    }

    /// `sign_csr` for a request already decoded from PEM.
    pub(crate) fn sign_csr_der(
        &self,
        der: &[u8],
        policy: &CsrPolicy,
    ) -> Result<SignedCertificate, CertError> {
        check_days(
            "validity_days",
            policy.validity_days,
            MAX_LEAF_VALIDITY_DAYS,
        )?;
        let csr = read_csr(der)?;
        let identity = csr.identity(&self.trust_domain)?;
        policy.check_expected(&identity)?;
        if csr.spki_der == self.issuer.key().subject_public_key_info() {
            return Err(CertError::CsrUsesCaKey);
        }

        let leaf = LeafParams {
            identity,
            dns_names: csr.dns_names,
            ip_addresses: csr.ip_addresses,
            validity_days: policy.validity_days,
        };
        let (not_before, not_after) = window_from_now(policy.validity_days);
        let (params, serial_hex) = self.leaf_certificate_params(&leaf, not_before, not_after)?;
        let cert = self.sign_leaf(&params, &csr.public_key)?;
        Ok(SignedCertificate {
            cert_pem: cert.pem(),
            serial_hex,
            identity: leaf.identity,
            not_before: params.not_before,
            not_after: params.not_after,
            public_key_der: csr.spki_der,
        })
    }

    /// Signs a CRL (PEM) listing `revoked`, valid from `this_update` until `next_update`.
    ///
    /// `crl_number` must grow with every CRL this CA publishes; the caller keeps the count.
    /// Times are truncated to the second. Refuses an empty window and a CA certificate whose
    /// key usage lacks `cRLSign` (peers would refuse the CRL).
    pub fn crl(
        &self,
        revoked: &[RevokedCertificate],
        crl_number: u64,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<String, CertError> {
        let (this_update, next_update) = (
            truncate_to_second(this_update),
            truncate_to_second(next_update),
        );
        check_year("this_update", this_update)?;
        check_year("next_update", next_update)?;
        if next_update <= this_update {
            return Err(CertError::CrlWindow {
                this_update,
                next_update,
            });
        }
        let cert = parse_certificate(&self.cert_der)?;
        if !self.issuer.key_usages().contains(&KeyUsagePurpose::CrlSign) {
            return Err(CertError::CaCannotSignCrls {
                subject: cert.subject().to_string(),
            });
        }
        // The CRL's authority key identifier must equal the CA certificate's subject key
        // identifier, or verifiers that match on it (OpenSSL) cannot find the issuer.
        let key_identifier_method = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);

        let revoked_certs = revoked
            .iter()
            .map(|entry| {
                let revocation_time = truncate_to_second(entry.revoked_at);
                check_year("revoked_at", revocation_time)?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial_bytes(&entry.serial_hex)?),
                    revocation_time,
                    reason_code: entry.reason.reason_code(),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CertError>>()?;
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// The leaf policy. Returns the parameters and the serial as lowercase hex.
    fn leaf_certificate_params(
        &self,
        req: &LeafParams,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(CertificateParams, String), CertError> {
        if req.identity.trust_domain() != self.trust_domain {
            return Err(CertError::TrustDomainMismatch {
                identity: req.identity.to_string(),
                requested: req.identity.trust_domain().to_owned(),
                authority: self.trust_domain.clone(),
            });
        }
        let (not_before, not_after) = (
            truncate_to_second(not_before),
            truncate_to_second(not_after),
        );
        check_window(not_before, not_after)?;

        let mut subject_alt_names =
            Vec::with_capacity(1 + req.dns_names.len() + req.ip_addresses.len());
        subject_alt_names.push(SanType::URI(ia5(req.identity.to_string())?));
        for name in &req.dns_names {
            if DnsName::try_from(name.as_str()).is_err() {
                return Err(CertError::InvalidDnsName(name.clone()));
            }
            subject_alt_names.push(SanType::DnsName(ia5(name.clone())?));
        }
        subject_alt_names.extend(req.ip_addresses.iter().copied().map(SanType::IpAddress));

        let mut distinguished_name = DistinguishedName::new();
        distinguished_name.push(DnType::CommonName, req.identity.last_segment());
        let (serial, serial_hex) = random_serial()?;

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name;
        params.subject_alt_names = subject_alt_names;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Both, always: every node is server and client (a local API client needs only
        // clientAuth, but one policy for every leaf is simpler to audit), and rustls accepts
        // a client certificate with no EKU at all, so an absent EKU must never happen by
        // accident.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial);
        params.not_before = not_before;
        params.not_after = not_after;
        Ok((params, serial_hex))
    }

    fn sign_leaf(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<Certificate, CertError> {
        Ok(params.signed_by(public_key, &self.issuer)?)
    }
}

/// Subject, trust domain and SubjectPublicKeyInfo of a certificate we are asked to sign with.
fn inspect_ca_certificate(der: &[u8]) -> Result<(String, String, Vec<u8>), CertError> {
    let cert = parse_certificate(der)?;
    let subject = cert.subject().to_string();
    if !is_ca(&cert)? {
        return Err(CertError::NotACa { subject });
    }
    let trust_domain = match uri_sans(&cert)?.as_slice() {
        [uri] => trust_domain_from_uri(uri)?,
        others => return Err(CertError::UriSanCount(others.len())),
    };
    // rcgen re-encodes the issuer name from these attributes and panics on an empty
    // RDN; both an empty and a multi-valued RDN would also break chain building.
    if cert.subject().iter().any(|rdn| rdn.iter().count() != 1) {
        return Err(CertError::InvalidCertificate(format!(
            "ca subject {subject:?} has an empty or multi-valued relative distinguished name"
        )));
    }
    Ok((subject, trust_domain, cert.public_key().raw.to_vec()))
}

fn trust_domain_from_uri(uri: &str) -> Result<String, CertError> {
    let trust_domain = uri
        .strip_prefix(SPIFFE_SCHEME)
        .ok_or_else(|| CertError::CaTrustDomainUri(uri.to_owned()))?;
    validate_trust_domain(trust_domain).map_err(|_| CertError::CaTrustDomainUri(uri.to_owned()))?;
    Ok(trust_domain.to_owned())
}

fn check_display_name(name: &str) -> Result<(), CertError> {
    let reason = if name.trim().is_empty() {
        "must not be empty"
    } else if name.chars().count() > MAX_DISPLAY_NAME_LEN {
        "longer than 64 characters"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(CertError::InvalidDisplayName {
        value: name.to_owned(),
        reason,
    })
}

fn check_days(field: &'static str, days: u32, max: u32) -> Result<(), CertError> {
    if (1..=max).contains(&days) {
        Ok(())
    } else {
        Err(CertError::ValidityDays { field, days, max })
    }
}

fn check_window(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<(), CertError> {
    for (field, value) in [("not_before", not_before), ("not_after", not_after)] {
        if !(1970..=9999).contains(&value.year()) {
            return Err(CertError::DateOutOfRange { field, value });
        }
    }
    if not_after <= not_before {
        return Err(CertError::ValidityWindow {
            not_before,
            not_after,
        });
    }
    Ok(())
}

fn check_year(field: &'static str, value: OffsetDateTime) -> Result<(), CertError> {
    if (1970..=9999).contains(&value.year()) {
        Ok(())
    } else {
        Err(CertError::DateOutOfRange { field, value })
    }
}

/// `(now - CLOCK_SKEW, now + days)`, to the second as X.509 stores them.
///
/// Callers bound `days` by `MAX_CA_VALIDITY_DAYS`, so the addition cannot overflow.
fn window_from_now(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = truncate_to_second(OffsetDateTime::now_utc());
    (now - CLOCK_SKEW, now + Duration::days(i64::from(days)))
}

fn truncate_to_second(value: OffsetDateTime) -> OffsetDateTime {
    value - Duration::nanoseconds(i64::from(value.nanosecond()))
}

/// A random positive 16-byte serial and its lowercase hex.
fn random_serial() -> Result<(SerialNumber, String), CertError> {
    let mut bytes = [0u8; SERIAL_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertError::Random)?;
    // Clear the sign bit (serials are positive) and set the next one, so DER needs no
    // padding octet and strips none: the serial is exactly these 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok((SerialNumber::from_slice(&bytes), hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use rustls::{CertificateError, RootCertStore};

    use super::*;
    use crate::{identity_from_cert_der, install_crypto_provider, summarize_cert_der};

    const TD: &str = "patchwork.test";

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate(&CaParams {
            trust_domain: TD.to_owned(),
            display_name: "Patchwork Test CA".to_owned(),
            validity_days: 30,
        })
        .expect("generate ca")
    }

    fn node_params(name: &str) -> LeafParams {
        LeafParams {
            identity: SpiffeId::node(TD, name).expect("valid node id"),
            dns_names: vec![format!("{name}.patchwork.test")],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            validity_days: 7,
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        let mut certs = certs_from_pem(pem.as_bytes()).expect("pem holds a certificate");
        assert_eq!(certs.len(), 1);
        certs.remove(0)
    }

    fn client_verifier(ca: &CertificateAuthority) -> Arc<dyn ClientCertVerifier> {
        install_crypto_provider();
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.cert_der().clone())
            .expect("ca is a usable trust anchor");
        WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .expect("client verifier")
    }

    #[test]
    fn ca_certificate_follows_ca_policy() {
        let ca = ca();
        assert_eq!(ca.trust_domain(), TD);
        let summary = summarize_cert_der(ca.cert_der()).expect("summarize ca");
        assert!(summary.is_ca);
        assert_eq!(summary.subject, "CN=Patchwork Test CA, O=Patchwork Test CA");
        assert_eq!(summary.issuer, summary.subject);
        assert_eq!(
            summary.identity, None,
            "a bare trust domain is not a spiffe id"
        );
        assert_eq!(summary.serial_hex.len(), SERIAL_LEN * 2);
        let now = OffsetDateTime::now_utc();
        assert!(summary.not_before <= now - Duration::minutes(4));
        assert!(summary.not_before >= now - Duration::minutes(6));
        assert!(summary.not_after > now + Duration::days(29));

        let (_, cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("parse");
        let constraints = cert.basic_constraints().expect("ok").expect("present");
        assert!(constraints.critical && constraints.value.ca);
        assert_eq!(constraints.value.path_len_constraint, Some(0));
        let usage = cert.key_usage().expect("ok").expect("present").value;
        assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
        assert_eq!(uri_sans(&cert).expect("sans"), ["spiffe://patchwork.test"]);
    }

    #[test]
    fn ca_params_are_checked() {
        let good = CaParams {
            trust_domain: TD.to_owned(),
            display_name: "CA".to_owned(),
            validity_days: 1,
        };
        let cases = [
            (
                CaParams {
                    trust_domain: "Bad.Domain".to_owned(),
                    ..good.clone()
                },
                "invalid trust domain \"Bad.Domain\"",
            ),
            (
                CaParams {
                    display_name: " ".to_owned(),
                    ..good.clone()
                },
                "invalid display_name \" \": must not be empty",
            ),
            (
                CaParams {
                    validity_days: 0,
                    ..good.clone()
                },
                "validity_days 0 is out of range, expected 1..=36500",
            ),
            (
                CaParams {
                    validity_days: u32::MAX,
                    ..good.clone()
                },
                "validity_days 4294967295 is out of range",
            ),
        ];
        for (params, expected) in cases {
            let err = CertificateAuthority::generate(&params).expect_err(expected);
            assert!(err.to_string().starts_with(expected), "{err}");
        }
    }

    #[test]
    fn issued_leaf_carries_identity_and_policy() {
        let ca = ca();
        let req = node_params("alpha");
        let issued = ca.issue(&req).expect("issue");
        let leaf = der(&issued.cert_pem);

        assert_eq!(
            identity_from_cert_der(&leaf).expect("identity"),
            req.identity
        );

        let summary = summarize_cert_der(&leaf).expect("summarize leaf");
        assert_eq!(summary.subject, "CN=alpha");
        assert_eq!(summary.issuer, "CN=Patchwork Test CA, O=Patchwork Test CA");
        assert_eq!(summary.identity.as_ref(), Some(&req.identity));
        assert_eq!(summary.dns_names, ["alpha.patchwork.test"]);
        assert_eq!(summary.ip_addresses, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert!(!summary.is_ca);
        assert!(summary.server_auth && summary.client_auth);
        assert_eq!(summary.serial_hex, issued.serial_hex);
        assert_eq!(summary.not_after, issued.not_after);
        let lifetime = summary.not_after - summary.not_before;
        assert_eq!(lifetime, Duration::days(7) + CLOCK_SKEW);

        // The same facts straight from x509-parser, not through our summary.
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
        let eku = cert
            .extended_key_usage()
            .expect("ok")
            .expect("present")
            .value;
        assert!(eku.server_auth && eku.client_auth && !eku.any);
        let constraints = cert.basic_constraints().expect("ok").expect("explicit");
        assert!(!constraints.value.ca);
        let usage = cert.key_usage().expect("ok").expect("present").value;
        assert!(usage.digital_signature() && !usage.key_cert_sign());

        let key = crate::private_key_from_pem(issued.key_pem.as_bytes()).expect("leaf key");
        let pair = KeyPair::try_from(&key).expect("rcgen reads the key back");
        assert_eq!(
            cert.public_key().raw,
            pair.subject_public_key_info().as_slice()
        );
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn serials_are_random() {
        let ca = ca();
        let a = ca.issue(&node_params("a")).expect("issue a");
        let b = ca.issue(&node_params("a")).expect("issue b");
        assert_ne!(a.serial_hex, b.serial_hex);
    }

    #[test]
    fn identity_outside_trust_domain_is_refused() {
        let ca = ca();
        let req = LeafParams {
            identity: SpiffeId::node("other.test", "mallory").expect("valid id"),
            ..node_params("alpha")
        };
        let err = ca.issue(&req).expect_err("foreign trust domain");
        assert_eq!(
            err.to_string(),
            "identity spiffe://other.test/node/mallory is in trust domain \"other.test\", \
             but this ca issues for \"patchwork.test\""
        );
    }

    #[test]
    fn leaf_validity_is_bounded() {
        let ca = ca();
        for days in [0, MAX_LEAF_VALIDITY_DAYS + 1] {
            let req = LeafParams {
                validity_days: days,
                ..node_params("alpha")
            };
            let err = ca.issue(&req).expect_err("out of range");
            assert_eq!(
                err.to_string(),
                format!("validity_days {days} is out of range, expected 1..=397")
            );
        }
        let req = LeafParams {
            validity_days: MAX_LEAF_VALIDITY_DAYS,
            ..node_params("alpha")
        };
        assert!(ca.issue(&req).is_ok());

        let now = OffsetDateTime::now_utc();
        let err = ca
            .issue_with_validity(&node_params("alpha"), now, now - Duration::hours(1))
            .expect_err("backwards window");
        assert!(matches!(err, CertError::ValidityWindow { .. }), "{err}");
    }

    #[test]
    fn invalid_dns_name_is_refused() {
        let ca = ca();
        for bad in [
            "*.patchwork.test",
            "",
            "a..b",
            "-a.test",
            "127.0.0.1",
            "é.test",
        ] {
            let req = LeafParams {
                dns_names: vec![bad.to_owned()],
                ..node_params("alpha")
            };
            let err = ca.issue(&req).expect_err(bad);
            assert_eq!(err.to_string(), format!("invalid dns name {bad:?}"));
        }
    }

    #[test]
    fn ca_certificate_is_not_an_identity() {
        let ca = ca();
        let err = identity_from_cert_der(ca.cert_der()).expect_err("ca as leaf");
        assert_eq!(err.to_string(), "certificate is a CA");
    }

    fn self_signed_leaf(uris: &[&str]) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.subject_alt_names = uris
            .iter()
            .map(|uri| SanType::URI(ia5((*uri).to_owned()).expect("ascii")))
            .collect();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        params.self_signed(&key).expect("self-signed").der().clone()
    }

    #[test]
    fn uri_san_count_must_be_one() {
        let two = self_signed_leaf(&["spiffe://td/node/a", "spiffe://td/node/b"]);
        let err = identity_from_cert_der(&two).expect_err("two uris");
        assert_eq!(
            err.to_string(),
            "certificate has 2 URI SANs, expected exactly one"
        );
        let none = self_signed_leaf(&[]);
        let err = identity_from_cert_der(&none).expect_err("no uri");
        assert_eq!(
            err.to_string(),
            "certificate has 0 URI SANs, expected exactly one"
        );
        let bad = self_signed_leaf(&["https://td/node/a"]);
        let err = identity_from_cert_der(&bad).expect_err("not spiffe");
        assert!(matches!(err, CertError::InvalidSpiffeId { .. }), "{err}");
        assert_eq!(summarize_cert_der(&two).expect("summary").identity, None);
    }

    #[test]
    fn from_pem_round_trip() {
        let original = ca();
        let reloaded = CertificateAuthority::from_pem(original.cert_pem(), &original.key_pem())
            .expect("reload");
        assert_eq!(reloaded.trust_domain(), TD);
        assert_eq!(reloaded.cert_pem(), original.cert_pem());
        assert_eq!(reloaded.cert_der(), original.cert_der());
        assert_eq!(reloaded.key_pem(), original.key_pem());

        // A leaf from the reloaded CA must chain to the original certificate.
        let issued = reloaded.issue(&node_params("beta")).expect("issue");
        client_verifier(&original)
            .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
            .expect("leaf from reloaded ca verifies");
        assert!(!format!("{reloaded:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn from_pem_refuses_mismatched_key() {
        let a = ca();
        let b = ca();
        let err =
            CertificateAuthority::from_pem(a.cert_pem(), &b.key_pem()).expect_err("wrong key");
        assert_eq!(
            err.to_string(),
            "private key does not match the public key of ca certificate \
             \"CN=Patchwork Test CA, O=Patchwork Test CA\""
        );
    }

    #[test]
    fn from_pem_refuses_leaf_and_garbage() {
        let ca = ca();
        let issued = ca.issue(&node_params("alpha")).expect("issue");
        let err = CertificateAuthority::from_pem(&issued.cert_pem, &issued.key_pem)
            .expect_err("leaf is not a ca");
        assert_eq!(err.to_string(), "certificate \"CN=alpha\" is not a CA");

        let two = format!("{}{}", ca.cert_pem(), ca.cert_pem());
        let err = CertificateAuthority::from_pem(&two, &ca.key_pem()).expect_err("two certs");
        assert_eq!(
            err.to_string(),
            "pem input holds 2 certificates, expected exactly one"
        );

        let err = CertificateAuthority::from_pem(ca.cert_pem(), ca.cert_pem()).expect_err("no key");
        assert!(matches!(err, CertError::InvalidPrivateKey(_)), "{err}");
        let err = CertificateAuthority::from_pem("", &ca.key_pem()).expect_err("no cert");
        assert!(matches!(err, CertError::NoCertificateInPem), "{err}");
    }

    #[test]
    fn rustls_accepts_leaf_as_client_and_server() {
        let ca = ca();
        let issued = ca.issue(&node_params("alpha")).expect("issue");
        let leaf = der(&issued.cert_pem);

        client_verifier(&ca)
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .expect("client certificate verifies");

        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).expect("trust anchor");
        let server_verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .expect("server verifier");
        let name = ServerName::try_from("alpha.patchwork.test").expect("dns name");
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            server_verifier.as_ref(),
            &leaf,
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .expect("server certificate verifies for its dns name");
    }

    #[test]
    fn rustls_refuses_expired_leaf() {
        let ca = ca();
        let now = OffsetDateTime::now_utc();
        let issued = ca
            .issue_with_validity(
                &node_params("alpha"),
                now - Duration::days(2),
                now - Duration::days(1),
            )
            .expect("issue expired");
        let err = client_verifier(&ca)
            .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
            .expect_err("expired");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rustls_refuses_leaf_from_another_ca() {
        let ours = ca();
        let theirs = CertificateAuthority::generate(&CaParams {
            trust_domain: TD.to_owned(),
            display_name: "Someone Else's CA".to_owned(),
            validity_days: 30,
        })
        .expect("generate other ca");
        let issued = theirs.issue(&node_params("alpha")).expect("issue");
        let err = client_verifier(&ours)
            .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
            .expect_err("unknown issuer");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rustls_refuses_leaf_from_impostor_ca_with_same_name() {
        // Same subject and trust domain, different key: webpki finds the anchor by name
        // and then refuses the signature.
        let ours = ca();
        let impostor = ca();
        let issued = impostor.issue(&node_params("alpha")).expect("issue");
        let err = client_verifier(&ours)
            .verify_client_cert(&der(&issued.cert_pem), &[], UnixTime::now())
            .expect_err("bad signature");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::BadSignature)
            ),
            "{err:?}"
        );
    }
}
