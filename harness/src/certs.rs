//! Test PKI generated per test with rcgen: a mesh CA, the workload's server certificate and
//! client leaves carrying SPIFFE URI SANs, plus an untrusted CA. Keys are written to the test's
//! work dir only (never committed).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::Result;

/// The trust domain of every generated identity.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The workload's own identity (server certificate URI SAN).
pub const SERVER_SPIFFE: &str = "spiffe://cluster.local/ns/foo/sa/echo";

/// A certificate and its key on disk (PEM).
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The URI SAN carried by the certificate (empty for none).
    pub uri: String,
    /// Certificate chain (leaf only).
    pub cert: PathBuf,
    /// Private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// A generated PKI in one folder: `ca.crt`, `server.crt`, `server.key`, client leaves on demand.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    untrusted: CertifiedIssuer<'static, KeyPair>,
    /// The mesh CA certificate (what Envoy trusts and clients verify the server with).
    pub ca_cert: PathBuf,
    /// The server certificate: DNS `localhost`, IP 127.0.0.1, URI [`SERVER_SPIFFE`].
    pub server: CertFiles,
}

fn new_ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "meshauthz e2e");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "meshauthz e2e");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn uri_san(uri: &str) -> Result<SanType> {
    Ok(SanType::URI(uri.try_into()?))
}

impl Pki {
    /// Generate the CA, the server certificate and the untrusted CA into `dir`.
    pub fn generate(dir: &Path) -> Result<Pki> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let ca = new_ca("meshauthz e2e mesh CA")?;
        let untrusted = new_ca("meshauthz e2e UNTRUSTED CA")?;
        let ca_cert = dir.join("ca.crt");
        std::fs::write(&ca_cert, ca.pem())?;
        let (cert, key) = leaf(
            &ca,
            "localhost",
            vec![
                SanType::DnsName("localhost".try_into()?),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                uri_san(SERVER_SPIFFE)?,
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let server = write_pair(&dir, "server", SERVER_SPIFFE, &cert, &key)?;
        Ok(Pki {
            dir,
            ca,
            untrusted,
            ca_cert,
            server,
        })
    }

    /// The folder holding `ca.crt`, `server.crt`, `server.key` (Envoy's `{{CERT_DIR}}`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client leaf signed by the mesh CA for `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub fn client(&self, ns: &str, sa: &str) -> Result<CertFiles> {
        let uri = format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}");
        self.client_with_uri(&format!("client-{ns}-{sa}"), &uri)
    }

    /// A client leaf signed by the mesh CA with an arbitrary URI SAN; files `<name>.crt/.key`.
    pub fn client_with_uri(&self, name: &str, uri: &str) -> Result<CertFiles> {
        let (cert, key) = leaf(
            &self.ca,
            name,
            vec![uri_san(uri)?],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write_pair(&self.dir, name, uri, &cert, &key)
    }

    /// A client leaf signed by the mesh CA carrying every URI SAN of `uris`, in that order;
    /// files `<name>.crt/.key` (`uri` of the result: the SANs joined with `,`).
    pub fn client_with_uris(&self, name: &str, uris: &[&str]) -> Result<CertFiles> {
        let sans = uris
            .iter()
            .map(|u| uri_san(u))
            .collect::<Result<Vec<_>>>()?;
        let (cert, key) = leaf(&self.ca, name, sans, ExtendedKeyUsagePurpose::ClientAuth)?;
        write_pair(&self.dir, name, &uris.join(","), &cert, &key)
    }

    /// A client leaf for `spiffe://cluster.local/ns/<ns>/sa/<sa>` signed by a CA Envoy does NOT trust.
    pub fn untrusted_client(&self, ns: &str, sa: &str) -> Result<CertFiles> {
        let uri = format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}");
        let name = format!("untrusted-{ns}-{sa}");
        let (cert, key) = leaf(
            &self.untrusted,
            &name,
            vec![uri_san(&uri)?],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        write_pair(&self.dir, &name, &uri, &cert, &key)
    }
}

fn write_pair(dir: &Path, name: &str, uri: &str, cert: &str, key: &str) -> Result<CertFiles> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    Ok(CertFiles {
        uri: uri.to_string(),
        cert: cert_path,
        key: key_path,
    })
}
