//! Who a peer is: the SPIFFE id type, and reading it (and a human summary) out of a certificate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::CertError;

const SCHEME: &str = "spiffe://";
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;
const MAX_SEGMENT_LEN: usize = 64;
const NODE_SEGMENT: &str = "node";
const CLIENT_SEGMENT: &str = "client";

/// A SPIFFE id, `spiffe://<trust-domain>/<segment>/<segment>...`.
///
/// This is the only form in which the rest of the workspace learns who is calling: it is
/// read from the URI SAN of a verified certificate, never from a request field. The rules
/// are stricter than the SPIFFE spec where that removes ambiguity: lowercase trust domain
/// without port or userinfo, at least one path segment, segments of `[A-Za-z0-9._-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    path: Vec<String>,
}

impl SpiffeId {
    /// The id of a federation node: `spiffe://<trust_domain>/node/<node_name>`.
    pub fn node(trust_domain: &str, node_name: &str) -> Result<SpiffeId, CertError> {
        Self::with_role(trust_domain, NODE_SEGMENT, node_name)
    }

    /// The id of an operator or API client: `spiffe://<trust_domain>/client/<name>`.
    pub fn client(trust_domain: &str, name: &str) -> Result<SpiffeId, CertError> {
        Self::with_role(trust_domain, CLIENT_SEGMENT, name)
    }

    fn with_role(trust_domain: &str, role: &str, name: &str) -> Result<SpiffeId, CertError> {
        validate_trust_domain(trust_domain)?;
        // The name is checked as one segment so that "a/b" cannot smuggle in extra path.
        check_segment(name).map_err(|reason| CertError::InvalidSpiffeId {
            value: format!("{SCHEME}{trust_domain}/{role}/{name}"),
            reason,
        })?;
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            path: vec![role.to_owned(), name.to_owned()],
        })
    }

    /// The trust domain, e.g. `patchwork.example`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path segments, e.g. `["node", "alpha"]`.
    pub fn path_segments(&self) -> &[String] {
        &self.path
    }

    /// The node name when this is exactly `spiffe://<td>/node/<name>`.
    pub fn node_name(&self) -> Option<&str> {
        match self.path.as_slice() {
            [role, name] if role == NODE_SEGMENT => Some(name),
            _ => None,
        }
    }

    /// The last path segment; used as the certificate subject CN.
    pub fn last_segment(&self) -> &str {
        // Construction guarantees at least one segment; the fallback is unreachable.
        self.path.last().map_or("", String::as_str)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.trust_domain)?;
        for segment in &self.path {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

impl FromStr for SpiffeId {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_spiffe_id(s).map_err(|reason| CertError::InvalidSpiffeId {
            value: s.to_owned(),
            reason,
        })
    }
}

fn parse_spiffe_id(s: &str) -> Result<SpiffeId, String> {
    if s.len() > MAX_ID_LEN {
        return Err(format!("longer than {MAX_ID_LEN} bytes"));
    }
    let rest = s
        .strip_prefix(SCHEME)
        .ok_or_else(|| format!("scheme must be exactly {SCHEME:?}"))?;
    let (trust_domain, path) = rest
        .split_once('/')
        .ok_or_else(|| "missing path (at least one segment is required)".to_owned())?;
    check_trust_domain(trust_domain).map_err(|reason| format!("trust domain: {reason}"))?;
    let path = path
        .split('/')
        .enumerate()
        .map(|(index, segment)| {
            check_segment(segment)
                .map(|()| segment.to_owned())
                .map_err(|reason| format!("path segment {}: {reason}", index + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SpiffeId {
        trust_domain: trust_domain.to_owned(),
        path,
    })
}

/// Checks a bare trust domain name (`patchwork.example`, no scheme).
///
/// Exposed so configuration can be validated before any certificate exists.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), CertError> {
    check_trust_domain(trust_domain).map_err(|reason| CertError::InvalidTrustDomain {
        value: trust_domain.to_owned(),
        reason,
    })
}

fn check_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(format!("longer than {MAX_TRUST_DOMAIN_LEN} characters"));
    }
    // This character set alone rules out ports (':'), userinfo ('@'), query ('?'),
    // fragment ('#'), percent-encoding and uppercase.
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(format!("character {c:?} not allowed, expected [a-z0-9.-_]")),
        None => Ok(()),
    }
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if segment == "." || segment == ".." {
        return Err(format!("{segment:?} is not allowed"));
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(format!("longer than {MAX_SEGMENT_LEN} characters"));
    }
    match segment
        .chars()
        .find(|c| !matches!(c, 'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        Some(c) => Err(format!(
            "character {c:?} not allowed, expected [A-Za-z0-9._-]"
        )),
        None => Ok(()),
    }
}

/// Parses DER and refuses trailing bytes, so one blob is exactly one certificate.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|err| CertError::InvalidCertificate(err.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::InvalidCertificate(format!(
            "{} trailing bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> Result<bool, CertError> {
    let constraints = cert
        .basic_constraints()
        .map_err(|err| CertError::InvalidCertificate(format!("basic constraints: {err}")))?;
    Ok(constraints.is_some_and(|ext| ext.value.ca))
}

/// All URI SANs, in certificate order.
pub(crate) fn uri_sans<'a>(cert: &X509Certificate<'a>) -> Result<Vec<&'a str>, CertError> {
    Ok(general_names(cert)?
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect())
}

fn general_names<'a>(cert: &X509Certificate<'a>) -> Result<Vec<GeneralName<'a>>, CertError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|err| CertError::InvalidCertificate(format!("subject alternative name: {err}")))?;
    Ok(san.map_or_else(Vec::new, |ext| ext.value.general_names.clone()))
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, CertError> {
    match uri_sans(cert)?.as_slice() {
        [uri] => uri.parse(),
        others => Err(CertError::UriSanCount(others.len())),
    }
}

/// The SPIFFE id of an end-entity certificate (DER).
///
/// Refuses CA certificates and anything without exactly one URI SAN. This does not verify
/// the chain: call it only on a certificate rustls has already verified.
pub fn identity_from_cert_der(der: &[u8]) -> Result<SpiffeId, CertError> {
    let cert = parse_certificate(der)?;
    if is_ca(&cert)? {
        return Err(CertError::CertificateIsCa);
    }
    identity_of(&cert)
}

/// What a certificate says, for operators and logs (`patchwork cert show`, audit lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSummary {
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex of the serial's DER content bytes, no separators.
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `Some` only when there is exactly one URI SAN and it is a valid SPIFFE id.
    pub identity: Option<SpiffeId>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub is_ca: bool,
    /// The extended key usage lists `serverAuth` (or `anyExtendedKeyUsage`).
    pub server_auth: bool,
    /// The extended key usage lists `clientAuth` (or `anyExtendedKeyUsage`).
    pub client_auth: bool,
    /// The certified key's SubjectPublicKeyInfo, DER: what a CA compares to refuse
    /// re-certifying the key of a revoked certificate.
    pub public_key_der: Vec<u8>,
}

/// Describes a certificate (DER) without judging it: CAs and id-less certificates are fine.
pub fn summarize_cert_der(der: &[u8]) -> Result<CertificateSummary, CertError> {
    let cert = parse_certificate(der)?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    for name in general_names(&cert)? {
        match name {
            GeneralName::DNSName(dns) => dns_names.push(dns.to_owned()),
            GeneralName::IPAddress(octets) => ip_addresses.push(ip_from_octets(octets)?),
            _ => {}
        }
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|err| CertError::InvalidCertificate(format!("extended key usage: {err}")))?;
    let (server_auth, client_auth) = eku.map_or((false, false), |ext| {
        (
            ext.value.any || ext.value.server_auth,
            ext.value.any || ext.value.client_auth,
        )
    });
    Ok(CertificateSummary {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial_hex: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        identity: identity_of(&cert).ok(),
        dns_names,
        ip_addresses,
        is_ca: is_ca(&cert)?,
        server_auth,
        client_auth,
        public_key_der: cert.public_key().raw.to_vec(),
    })
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
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        let cases = [
            "spiffe://patchwork.example/node/alpha",
            "spiffe://td/client/ops-1",
            "spiffe://a-b_c.d0/x",
            "spiffe://td/A.b_C-9/..x/x..",
        ];
        for case in cases {
            let id: SpiffeId = case.parse().expect(case);
            assert_eq!(id.to_string(), case);
        }
        let long_td = "a".repeat(255);
        let long_seg = "b".repeat(64);
        let id: SpiffeId = format!("spiffe://{long_td}/{long_seg}")
            .parse()
            .expect("limits are inclusive");
        assert_eq!(id.trust_domain(), long_td);
    }

    #[test]
    fn accessors() {
        let id: SpiffeId = "spiffe://td/node/alpha".parse().expect("valid");
        assert_eq!(id.trust_domain(), "td");
        assert_eq!(id.path_segments(), ["node", "alpha"]);
        assert_eq!(id.node_name(), Some("alpha"));
        assert_eq!(id.last_segment(), "alpha");

        for not_node in [
            "spiffe://td/client/alpha",
            "spiffe://td/node",
            "spiffe://td/node/a/b",
        ] {
            let id: SpiffeId = not_node.parse().expect(not_node);
            assert_eq!(id.node_name(), None, "{not_node}");
        }
    }

    #[test]
    fn constructors() {
        let node = SpiffeId::node("td", "alpha").expect("valid node");
        assert_eq!(node.to_string(), "spiffe://td/node/alpha");
        assert_eq!(node, "spiffe://td/node/alpha".parse().expect("valid"));
        let client = SpiffeId::client("td", "ops").expect("valid client");
        assert_eq!(client.to_string(), "spiffe://td/client/ops");
        assert_eq!(client.node_name(), None);

        let err = SpiffeId::node("td", "a/b").expect_err("slash in a name");
        assert_eq!(
            err.to_string(),
            "invalid spiffe id \"spiffe://td/node/a/b\": character '/' not allowed, expected [A-Za-z0-9._-]"
        );
        let err = SpiffeId::node("TD", "a").expect_err("uppercase trust domain");
        assert!(matches!(err, CertError::InvalidTrustDomain { ref value, .. } if value == "TD"));
        assert!(SpiffeId::client("td", "..").is_err());
        assert!(SpiffeId::client("td", "").is_err());
    }

    #[test]
    fn rejections() {
        let long_id = format!("spiffe://td/{}", ["s"; 1100].join("/"));
        let long_td = format!("spiffe://{}/x", "a".repeat(256));
        let long_seg = format!("spiffe://td/{}", "b".repeat(65));
        let cases: &[(&str, &str)] = &[
            ("", "scheme must be exactly"),
            ("td/node/a", "scheme must be exactly"),
            ("SPIFFE://td/node/a", "scheme must be exactly"),
            ("spiffe:/td/node/a", "scheme must be exactly"),
            ("https://td/node/a", "scheme must be exactly"),
            ("spiffe://td", "missing path"),
            ("spiffe://td/", "path segment 1: must not be empty"),
            ("spiffe:///node/a", "trust domain: must not be empty"),
            ("spiffe://td//a", "path segment 1: must not be empty"),
            ("spiffe://td/node/", "path segment 2: must not be empty"),
            ("spiffe://td/./a", "\".\" is not allowed"),
            ("spiffe://td/node/..", "\"..\" is not allowed"),
            ("spiffe://Td/node/a", "character 'T' not allowed"),
            ("spiffe://td:443/node/a", "character ':' not allowed"),
            ("spiffe://user@td/node/a", "character '@' not allowed"),
            ("spiffe://td/node/a?x=1", "character '?' not allowed"),
            ("spiffe://td/node/a#frag", "character '#' not allowed"),
            ("spiffe://td?x/node/a", "character '?' not allowed"),
            ("spiffe://td/node/a%20b", "character '%' not allowed"),
            ("spiffe://td/node/a b", "character ' ' not allowed"),
            ("spiffe://td/node/é", "character 'é' not allowed"),
            (&long_id, "longer than 2048 bytes"),
            (&long_td, "longer than 255 characters"),
            (&long_seg, "longer than 64 characters"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<SpiffeId>().expect_err(input);
            let message = err.to_string();
            assert!(
                matches!(err, CertError::InvalidSpiffeId { ref value, .. } if value == input),
                "{input}: {message}"
            );
            assert!(message.contains(expected), "{input}: {message}");
        }
    }

    #[test]
    fn ordering_is_by_trust_domain_then_path() {
        let mut ids: Vec<SpiffeId> = [
            "spiffe://b/node/a",
            "spiffe://a/node/z",
            "spiffe://a/node/b",
        ]
        .iter()
        .map(|s| s.parse().expect(s))
        .collect();
        ids.sort();
        let sorted: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            [
                "spiffe://a/node/b",
                "spiffe://a/node/z",
                "spiffe://b/node/a"
            ]
        );
    }

    #[test]
    fn garbage_der_is_refused() {
        let err = identity_from_cert_der(b"not a certificate").expect_err("garbage");
        assert!(matches!(err, CertError::InvalidCertificate(_)), "{err}");
        assert!(summarize_cert_der(&[]).is_err());
    }
}
