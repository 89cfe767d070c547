//! Certificate revocation lists: what a CA lists as revoked, reading CRL PEM into the DER
//! rustls checks chains against, and a human summary of a CRL for operators.
//!
//! Signing lives on `CertificateAuthority::crl`, next to the CA key.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateRevocationListDer;
use time::OffsetDateTime;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::CertError;

/// Longest serial number RFC 5280 lets a CA issue, plus a possible DER sign octet.
const MAX_SERIAL_BYTES: usize = 21;

/// Why a certificate was revoked (RFC 5280 §5.3.1), as operators type it: `key-compromise`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
}

impl RevocationReason {
    /// Every reason, in RFC 5280 code order.
    pub const ALL: [RevocationReason; 6] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];

    /// The kebab-case name, e.g. `key-compromise`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::CaCompromise => "ca-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
        }
    }

    /// The CRL entry's reason code; RFC 5280 says to leave out `unspecified`.
    pub(crate) fn reason_code(self) -> Option<rcgen::RevocationReason> {
        match self {
            RevocationReason::Unspecified => None,
            RevocationReason::KeyCompromise => Some(rcgen::RevocationReason::KeyCompromise),
            RevocationReason::CaCompromise => Some(rcgen::RevocationReason::CaCompromise),
            RevocationReason::AffiliationChanged => {
                Some(rcgen::RevocationReason::AffiliationChanged)
            }
            RevocationReason::Superseded => Some(rcgen::RevocationReason::Superseded),
            RevocationReason::CessationOfOperation => {
                Some(rcgen::RevocationReason::CessationOfOperation)
            }
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RevocationReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| CertError::InvalidRevocationReason(s.to_owned()))
    }
}

/// One entry of a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// Hex of the certificate's serial, as `summarize_cert_der` reports it.
    pub serial_hex: String,
    pub revoked_at: OffsetDateTime,
    pub reason: RevocationReason,
}

/// A serial number as operators may paste it (`4A:1B:...` from OpenSSL, or plain hex),
/// normalised to the lowercase hex without separators that `summarize_cert_der` reports.
pub fn normalize_serial_hex(value: &str) -> Result<String, CertError> {
    let normalized: String = value
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    serial_bytes(&normalized).map_err(|err| match err {
        CertError::InvalidSerial { reason, .. } => CertError::InvalidSerial {
            value: value.to_owned(),
            reason,
        },
        other => other,
    })?;
    Ok(normalized)
}

/// The bytes of a lowercase or uppercase hex serial without separators.
pub(crate) fn serial_bytes(serial_hex: &str) -> Result<Vec<u8>, CertError> {
    let invalid = |reason| CertError::InvalidSerial {
        value: serial_hex.to_owned(),
        reason,
    };
    if serial_hex.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if !serial_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("not hexadecimal"));
    }
    if !serial_hex.len().is_multiple_of(2) {
        return Err(invalid("odd number of hex digits"));
    }
    if serial_hex.len() > MAX_SERIAL_BYTES * 2 {
        return Err(invalid("longer than 20 bytes"));
    }
    Ok(serial_hex
        .as_bytes()
        .chunks(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect())
}

/// The value of one ASCII hex digit (already checked by the caller).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Every `X509 CRL` block, in order.
///
/// Errors if the text is malformed or holds no CRL at all, so a mis-named file is caught
/// where it is loaded rather than by a peer being let in.
pub fn crls_from_pem(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, CertError> {
    let crls = rustls_pemfile::crls(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| CertError::Pem(err.to_string()))?;
    if crls.is_empty() {
        return Err(CertError::NoCrlInPem);
    }
    Ok(crls)
}

/// What a CRL says, for operators (`patchwork cert inspect`) and logs. Not verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlSummary {
    pub issuer: String,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    pub crl_number: Option<u64>,
    /// Lowercase hex, as `summarize_cert_der` reports serials, in CRL order.
    pub revoked_serials: Vec<String>,
}

/// Describes a CRL (DER) without checking its signature.
pub fn summarize_crl_der(der: &[u8]) -> Result<CrlSummary, CertError> {
    let (rest, crl) =
        x509_parser::parse_x509_crl(der).map_err(|err| CertError::InvalidCrl(err.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::InvalidCrl(format!(
            "{} trailing bytes after the crl",
            rest.len()
        )));
    }
    let crl_number = crl
        .crl_number()
        .map(|number| match number.to_u64_digits().as_slice() {
            [] => Ok(0),
            [value] => Ok(*value),
            _ => Err(CertError::InvalidCrl(format!(
                "crl number {number} does not fit in 64 bits"
            ))),
        })
        .transpose()?;
    Ok(CrlSummary {
        issuer: crl.issuer().to_string(),
        this_update: crl.last_update().to_datetime(),
        next_update: crl.next_update().map(|time| time.to_datetime()),
        crl_number,
        revoked_serials: revoked_serials(&crl),
    })
}

fn revoked_serials(crl: &CertificateRevocationList<'_>) -> Vec<String> {
    crl.iter_revoked_certificates()
        .map(|entry| hex::encode(entry.raw_serial()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P256_SHA256, SanType,
    };
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, RootCertStore};
    use time::Duration;

    use super::*;
    use crate::{
        CaParams, CertificateAuthority, IssuedCertificate, LeafParams, SpiffeId, certs_from_pem,
        install_crypto_provider,
    };

    const TD: &str = "patchwork.test";

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate(&CaParams {
            trust_domain: TD.to_owned(),
            display_name: "Patchwork Test CA".to_owned(),
            validity_days: 30,
        })
        .expect("generate ca")
    }

    fn leaf(ca: &CertificateAuthority, name: &str) -> IssuedCertificate {
        ca.issue(&LeafParams {
            identity: SpiffeId::node(TD, name).expect("id"),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            validity_days: 7,
        })
        .expect("issue")
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        certs_from_pem(pem.as_bytes()).expect("cert").remove(0)
    }

    fn revoked(serial_hex: &str, reason: RevocationReason) -> RevokedCertificate {
        RevokedCertificate {
            serial_hex: serial_hex.to_owned(),
            revoked_at: OffsetDateTime::now_utc() - Duration::hours(1),
            reason,
        }
    }

    fn verify_with_crl(
        ca: &CertificateAuthority,
        crl_pem: &str,
        leaf: &CertificateDer<'static>,
    ) -> Result<(), rustls::Error> {
        install_crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone()).expect("anchor");
        let crls = crls_from_pem(crl_pem.as_bytes()).expect("crl pem");
        WebPkiClientVerifier::builder(Arc::new(roots))
            .with_crls(crls)
            .build()
            .expect("verifier")
            .verify_client_cert(leaf, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn reasons_round_trip_in_kebab_case() {
        for reason in RevocationReason::ALL {
            assert_eq!(
                reason
                    .to_string()
                    .parse::<RevocationReason>()
                    .expect("parse"),
                reason
            );
        }
        assert_eq!(
            RevocationReason::KeyCompromise.to_string(),
            "key-compromise"
        );
        assert_eq!(
            "cessation-of-operation"
                .parse::<RevocationReason>()
                .expect("parse"),
            RevocationReason::CessationOfOperation
        );
        let err = "KeyCompromise"
            .parse::<RevocationReason>()
            .expect_err("camel case");
        assert!(
            err.to_string().starts_with(
                "invalid revocation reason \"KeyCompromise\", \
                 expected one of unspecified, key-compromise"
            ),
            "{err}"
        );
    }

    #[test]
    fn serials_are_normalised_and_checked() {
        assert_eq!(normalize_serial_hex("4A:1b:00").expect("colons"), "4a1b00");
        assert_eq!(normalize_serial_hex(" 7f \n").expect("trimmed"), "7f");
        for (bad, reason) in [
            ("", "must not be empty"),
            ("abc", "odd number of hex digits"),
            ("zz", "not hexadecimal"),
            ("0x1f", "not hexadecimal"),
            ("+1", "not hexadecimal"),
        ] {
            let err = normalize_serial_hex(bad).expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!("invalid serial number {bad:?}: {reason}")
            );
        }
        assert!(normalize_serial_hex(&"ab".repeat(22)).is_err());
        assert!(normalize_serial_hex(&"ab".repeat(21)).is_ok());
    }

    #[test]
    fn crl_lists_serials_and_rustls_refuses_the_revoked() {
        let ca = ca();
        let bad = leaf(&ca, "alpha");
        let good = leaf(&ca, "beta");
        let now = OffsetDateTime::now_utc();
        let crl = ca
            .crl(
                &[revoked(&bad.serial_hex, RevocationReason::KeyCompromise)],
                3,
                now,
                now + Duration::days(7),
            )
            .expect("crl");
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"));

        let ders = crls_from_pem(crl.as_bytes()).expect("crl pem");
        assert_eq!(ders.len(), 1);
        let summary = summarize_crl_der(&ders[0]).expect("summary");
        assert_eq!(summary.issuer, "CN=Patchwork Test CA, O=Patchwork Test CA");
        assert_eq!(summary.crl_number, Some(3));
        assert_eq!(
            summary.revoked_serials,
            std::slice::from_ref(&bad.serial_hex)
        );
        assert_eq!(summary.this_update.unix_timestamp(), now.unix_timestamp());
        assert_eq!(
            summary.next_update.map(OffsetDateTime::unix_timestamp),
            Some((now + Duration::days(7)).unix_timestamp())
        );

        let (_, parsed) = x509_parser::parse_x509_crl(&ders[0]).expect("parse");
        let entry = parsed.iter_revoked_certificates().next().expect("entry");
        assert_eq!(
            entry.reason_code().map(|(_, code)| code.0),
            Some(rcgen::RevocationReason::KeyCompromise as u8)
        );

        let err = verify_with_crl(&ca, &crl, &der(&bad.cert_pem)).expect_err("revoked");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::Revoked)
            ),
            "{err:?}"
        );
        verify_with_crl(&ca, &crl, &der(&good.cert_pem)).expect("unrevoked leaf passes");
    }

    #[test]
    fn crl_from_a_reloaded_ca_is_accepted() {
        let original = ca();
        let reloaded = CertificateAuthority::from_pem(original.cert_pem(), &original.key_pem())
            .expect("reload");
        let bad = leaf(&original, "alpha");
        let now = OffsetDateTime::now_utc();
        let crl = reloaded
            .crl(
                &[revoked(&bad.serial_hex, RevocationReason::Unspecified)],
                1,
                now,
                now + Duration::days(1),
            )
            .expect("crl");
        let err = verify_with_crl(&original, &crl, &der(&bad.cert_pem)).expect_err("revoked");
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(CertificateError::Revoked)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn empty_crl_lists_nothing() {
        let ca = ca();
        let now = OffsetDateTime::now_utc();
        let crl = ca.crl(&[], 0, now, now + Duration::days(1)).expect("crl");
        let ders = crls_from_pem(crl.as_bytes()).expect("pem");
        let summary = summarize_crl_der(&ders[0]).expect("summary");
        assert!(summary.revoked_serials.is_empty());
        assert_eq!(summary.crl_number, Some(0));
        verify_with_crl(&ca, &crl, &der(&leaf(&ca, "alpha").cert_pem)).expect("passes");
    }

    #[test]
    fn crl_window_and_entries_are_checked() {
        let ca = ca();
        let now = OffsetDateTime::now_utc();
        for next in [now, now - Duration::days(1)] {
            let err = ca.crl(&[], 1, now, next).expect_err("empty window");
            assert!(matches!(err, CertError::CrlWindow { .. }), "{err}");
            assert!(err.to_string().starts_with("crl next_update "), "{err}");
        }
        let err = ca
            .crl(
                &[revoked("abc", RevocationReason::Superseded)],
                1,
                now,
                now + Duration::days(1),
            )
            .expect_err("bad serial");
        assert_eq!(
            err.to_string(),
            "invalid serial number \"abc\": odd number of hex digits"
        );
    }

    #[test]
    fn ca_without_crl_sign_is_refused() {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "No CRL CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            crate::error::ia5(format!("spiffe://{TD}")).expect("ascii"),
        )];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        let ca = CertificateAuthority::from_pem(&cert.pem(), &key.serialize_pem()).expect("load");
        let now = OffsetDateTime::now_utc();
        let err = ca
            .crl(&[], 1, now, now + Duration::days(1))
            .expect_err("no crlSign");
        assert_eq!(
            err.to_string(),
            "ca certificate \"CN=No CRL CA\" lacks the crlSign key usage, so it cannot sign crls"
        );
    }

    #[test]
    fn crl_pem_and_der_are_checked() {
        let ca = ca();
        assert!(matches!(crls_from_pem(b""), Err(CertError::NoCrlInPem)));
        assert!(matches!(
            crls_from_pem(ca.cert_pem().as_bytes()),
            Err(CertError::NoCrlInPem)
        ));
        assert!(matches!(
            summarize_crl_der(b"not a crl"),
            Err(CertError::InvalidCrl(_))
        ));
        assert!(matches!(
            summarize_crl_der(ca.cert_der()),
            Err(CertError::InvalidCrl(_))
        ));
    }
}
