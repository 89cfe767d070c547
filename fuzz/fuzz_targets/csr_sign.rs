//! The CSR signer: any bytes, as PEM text and as the DER inside a PEM
//! block, are signed by policy or refused, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use patchwork_certs::{CaParams, CertificateAuthority, CsrPolicy};

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| {
        patchwork_certs::install_crypto_provider();
        CertificateAuthority::generate(&CaParams {
            trust_domain: "fuzz.patchwork".into(),
            display_name: "Fuzz CA".into(),
            validity_days: 30,
        })
        .expect("generate the fuzz CA")
    })
}

fuzz_target!(|data: &[u8]| {
    let policy = CsrPolicy {
        expected: None,
        validity_days: 30,
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ca().sign_csr(text, &policy);
    }
    let wrapped = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", data.to_vec()));
    let _ = ca().sign_csr(&wrapped, &policy);
});
