//! The one error type of this crate: everything that can go wrong reading, checking or minting certificates.

use time::OffsetDateTime;

/// Why a certificate, key or identity was refused or could not be produced.
///
/// Messages are lowercase, carry the offending value, and never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A string is not a SPIFFE id we accept.
    #[error("invalid spiffe id {value:?}: {reason}")]
    InvalidSpiffeId { value: String, reason: String },

    /// A trust domain name is not one we accept.
    #[error("invalid trust domain {value:?}: {reason}")]
    InvalidTrustDomain { value: String, reason: String },

    /// The DER bytes are not a parseable X.509 certificate.
    #[error("could not parse certificate: {0}")]
    InvalidCertificate(String),

    /// A leaf was expected but the certificate says `CA:TRUE`.
    #[error("certificate is a CA")]
    CertificateIsCa,

    /// A CA was expected but the certificate does not say `CA:TRUE`.
    #[error("certificate {subject:?} is not a CA")]
    NotACa { subject: String },

    /// Identity lives in exactly one URI SAN; anything else is ambiguous.
    #[error("certificate has {0} URI SANs, expected exactly one")]
    UriSanCount(usize),

    /// The CA certificate's URI SAN is not `spiffe://<trust-domain>`.
    #[error("ca certificate URI SAN {0:?} is not spiffe://<trust-domain>")]
    CaTrustDomainUri(String),

    /// An IP address SAN of impossible length.
    #[error("certificate has an ip address SAN of {0} bytes, expected 4 or 16")]
    IpAddressSan(usize),

    /// PEM text could not be read.
    #[error("could not read pem: {0}")]
    Pem(String),

    /// PEM text held no `CERTIFICATE` block.
    #[error("no certificate found in pem input")]
    NoCertificateInPem,

    /// PEM text held more certificates than the caller can use.
    #[error("pem input holds {0} certificates, expected exactly one")]
    CertificateCount(usize),

    /// PEM text held no private key block.
    #[error("no private key found in pem input")]
    NoPrivateKeyInPem,

    /// The private key could not be loaded for signing.
    #[error("could not load private key: {0}")]
    InvalidPrivateKey(String),

    /// The CA private key does not belong to the CA certificate.
    #[error("private key does not match the public key of ca certificate {subject:?}")]
    KeyMismatch { subject: String },

    /// The identity asked for is outside the trust domain this CA speaks for.
    #[error(
        "identity {identity} is in trust domain {requested:?}, but this ca issues for {authority:?}"
    )]
    TrustDomainMismatch {
        identity: String,
        requested: String,
        authority: String,
    },

    /// A validity period in days outside what the policy allows.
    #[error("{field} {days} is out of range, expected 1..={max}")]
    ValidityDays {
        field: &'static str,
        days: u32,
        max: u32,
    },

    /// An explicit validity window that ends before it starts.
    #[error("not_after {not_after} is not after not_before {not_before}")]
    ValidityWindow {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },

    /// A date that X.509 (as we encode it) cannot carry.
    #[error("{field} {value} is outside the supported years 1970..=9999")]
    DateOutOfRange {
        field: &'static str,
        value: OffsetDateTime,
    },

    /// A CA display name that cannot go in a subject CN.
    #[error("invalid display_name {value:?}: {reason}")]
    InvalidDisplayName { value: String, reason: &'static str },

    /// A DNS SAN that is not a valid host name.
    #[error("invalid dns name {0:?}")]
    InvalidDnsName(String),

    /// The operating system's random number generator failed.
    #[error("could not generate a random serial number")]
    Random,

    /// rcgen refused to build or sign the certificate.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
}
