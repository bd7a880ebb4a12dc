//! The certificates a control plane needs: a cluster CA with the API server's serving
//! certificate and an admin client certificate (`O=system:masters`), the service-account signing
//! key, and a front-proxy CA with the client certificate kube-apiserver presents to aggregated
//! API servers.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// File name of the cluster CA certificate inside the control plane's directory.
pub const CA_CERT: &str = "ca.crt";

/// Generated PEM material.
pub struct Material {
    pub ca_pem: String,
    ca_key: String,
    serving: (String, String),
    admin: (String, String),
    sa_private: String,
    sa_public: String,
    front_proxy_ca: String,
    front_proxy: (String, String),
}

/// Where [`Material::write`] put each file.
pub struct Files {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_private: PathBuf,
    pub sa_public: PathBuf,
    pub front_proxy_ca: PathBuf,
    pub front_proxy_cert: PathBuf,
    pub front_proxy_key: PathBuf,
}

fn ca(common_name: &str) -> Result<(Issuer<'static, KeyPair>, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let pem = params.self_signed(&key)?.pem();
    Ok((Issuer::new(params, key), pem))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Fresh material for one control plane.
pub fn generate() -> Result<Material, rcgen::Error> {
    let (cluster_ca, ca_pem) = ca("omniscale-test-ca")?;
    let serving = leaf(
        &cluster_ca,
        "kube-apiserver",
        None,
        &[
            "127.0.0.1",
            "localhost",
            "10.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let admin = leaf(&cluster_ca, "admin", Some("system:masters"), &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    let sa = KeyPair::generate()?;
    let (front_ca, front_proxy_ca) = ca("omniscale-test-front-proxy-ca")?;
    let front_proxy = leaf(&front_ca, "front-proxy-client", None, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(Material {
        ca_pem,
        ca_key: cluster_ca.key().serialize_pem(),
        serving,
        admin,
        sa_private: sa.serialize_pem(),
        sa_public: sa.public_key_pem(),
        front_proxy_ca,
        front_proxy,
    })
}

impl Material {
    /// Writes every file into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<Files> {
        let put = |name: &str, text: &str| -> std::io::Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        Ok(Files {
            ca_cert: put(CA_CERT, &self.ca_pem)?,
            ca_key: put("ca.key", &self.ca_key)?,
            serving_cert: put("apiserver.crt", &self.serving.0)?,
            serving_key: put("apiserver.key", &self.serving.1)?,
            admin_cert: put("admin.crt", &self.admin.0)?,
            admin_key: put("admin.key", &self.admin.1)?,
            sa_private: put("sa.key", &self.sa_private)?,
            sa_public: put("sa.pub", &self.sa_public)?,
            front_proxy_ca: put("front-proxy-ca.crt", &self.front_proxy_ca)?,
            front_proxy_cert: put("front-proxy-client.crt", &self.front_proxy.0)?,
            front_proxy_key: put("front-proxy-client.key", &self.front_proxy.1)?,
        })
    }
}
