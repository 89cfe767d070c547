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

    /// A node name that cannot be the last segment of `spiffe://<td>/node/<name>`.
    #[error("invalid node name {value:?}: {reason}")]
    InvalidNodeName { value: String, reason: String },

    /// PEM text held no `CERTIFICATE REQUEST` block.
    #[error("no certificate signing request found in pem input")]
    NoCsrInPem,

    /// PEM text held several certificate signing requests.
    #[error("pem input holds {0} certificate signing requests, expected exactly one")]
    CsrCount(usize),

    /// The DER bytes are not a parseable PKCS#10 certificate signing request.
    #[error("could not parse certificate signing request: {0}")]
    InvalidCsr(String),

    /// The request's key or signature algorithm is one we do not verify.
    #[error(
        "certificate signing request uses an unsupported key or signature algorithm \
         (key {key_algorithm}, signature {signature_algorithm})"
    )]
    UnsupportedCsrAlgorithm {
        key_algorithm: String,
        signature_algorithm: String,
    },

    /// The request was not signed by the key it carries (altered, or assembled by hand).
    #[error(
        "certificate signing request signature does not verify with its own public key \
         (the request was altered or is not signed by its key)"
    )]
    CsrSignature,

    /// A request asking for more than one URI SAN: which identity is meant is ambiguous.
    #[error(
        "certificate signing request asks for {} URI SANs ({}), expected at most one",
        .0.len(),
        .0.join(", ")
    )]
    CsrUriSanCount(Vec<String>),

    /// A request for an identity that is not `spiffe://<trust-domain>/node/<name>`.
    #[error(
        "certificate signing request asks for identity {0}, but this ca signs only \
         node identities spiffe://<trust-domain>/node/<name>"
    )]
    NotANodeIdentity(String),

    /// A request without a URI SAN must name the node in exactly one subject CN.
    #[error(
        "certificate signing request has no URI SAN and {0} subject common names, \
         expected exactly one naming the node"
    )]
    CsrCommonNameCount(usize),

    /// The request names a different node than the operator said to expect.
    #[error(
        "certificate signing request is for node {requested:?}, but node {expected:?} was expected"
    )]
    NodeNameMismatch { requested: String, expected: String },

    /// A request carrying the CA's own public key; signing it would mint a leaf for the CA key.
    #[error("certificate signing request carries this ca's own public key")]
    CsrUsesCaKey,

    /// A certificate serial number that is not hex of 1..=20 bytes.
    #[error("invalid serial number {value:?}: {reason}")]
    InvalidSerial { value: String, reason: &'static str },

    /// A revocation reason name we do not know.
    #[error(
        "invalid revocation reason {0:?}, expected one of unspecified, key-compromise, \
         ca-compromise, affiliation-changed, superseded, cessation-of-operation"
    )]
    InvalidRevocationReason(String),

    /// The CA certificate's key usage does not allow signing CRLs.
    #[error("ca certificate {subject:?} lacks the crlSign key usage, so it cannot sign crls")]
    CaCannotSignCrls { subject: String },

    /// A CRL window that ends before it starts.
    #[error("crl next_update {next_update} is not after this_update {this_update}")]
    CrlWindow {
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    },

    /// PEM text held no `X509 CRL` block.
    #[error("no crl found in pem input")]
    NoCrlInPem,

    /// The DER bytes are not a parseable certificate revocation list.
    #[error("could not parse crl: {0}")]
    InvalidCrl(String),

    /// The operating system's random number generator failed.
    #[error("could not generate a random serial number")]
    Random,

    /// rcgen refused to build or sign the certificate.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),

    /// A trust bundle, CRL or TLS configuration could not be built.
    #[error("{0}")]
    Verifier(String),

    /// A certificate chain did not pass the trust bundle's policy.
    #[error("certificate is not trusted: {0}")]
    Untrusted(String),
}

/// A certificate name as the IA5 string X.509 wants (ASCII only).
pub(crate) fn ia5(value: String) -> Result<rcgen::string::Ia5String, CertError> {
    Ok(rcgen::string::Ia5String::try_from(value)?)
}
