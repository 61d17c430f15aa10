//! The fleet's certificate authority and the serving certificate every cluster presents
//! (valid for 127.0.0.1 and localhost), written where kubeconfig and the servers read them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

pub struct Pki {
    pub ca_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Generates a CA and a serving certificate into `dir`.
pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "fellowship-local-ca");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "fellowship-local-cluster");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    let pki = Pki {
        ca_pem: ca.pem(),
        cert_file: dir.join("cluster.crt"),
        key_file: dir.join("cluster.key"),
    };
    std::fs::write(dir.join("ca.crt"), &pki.ca_pem)?;
    std::fs::write(&pki.cert_file, cert.pem())?;
    fellowship_apiserver::tls::write_private(&pki.key_file, &key.serialize_pem())?;
    Ok(pki)
}
