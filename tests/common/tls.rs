//! Certificates made at test time: a CA, and a server certificate it
//! signed for 127.0.0.1 and localhost.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// PEM texts of a test CA and of a server certificate it signed.
pub struct TestCerts {
    /// The CA's certificate: what a client trusts.
    pub ca: String,
    /// The server's certificate (`ssl_cert_file`).
    pub cert: String,
    /// The server's private key, PKCS#8 (`ssl_key_file`).
    pub key: String,
}

impl TestCerts {
    pub fn new() -> TestCerts {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pincluster test CA");
        let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("the server certificate");
        TestCerts {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn write(&self, dir: &Path) {
        for (name, pem) in [
            ("ca.pem", &self.ca),
            ("cert.pem", &self.cert),
            ("key.pem", &self.key),
        ] {
            std::fs::write(dir.join(name), pem).expect("write a PEM file");
        }
    }
}
