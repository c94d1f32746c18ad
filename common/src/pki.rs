//! The fleet's certificate authority (feature `pki`): what `fleetctl certs` and
//! `rvm-sim` use to make certificates.
//!
//! Layout of a certificate directory:
//!
//! | file | what |
//! | --- | --- |
//! | `ca.pem`, `ca.key` | the fleet CA; the key signs everything else and stays offline in production |
//! | `server.pem`, `server.key` | the fleet server: TLS server (SANs) and its MQTT client identity (CN `fleet-server`) |
//! | `command-signing.key`, `command-signing.pub` | Ed25519 key that signs recovery commands (PKCS#8 PEM; public key in hex) |
//! | `devices/{ID}.pem`, `devices/{ID}.key` | one per device, CN and O = device id |
//! | `clients/reader-{NAME}.pem`, `.key` | read-only subscribers (`fleet/v1/#` only) |
//!
//! Private keys are written with mode 0600 and never overwritten unless asked (`force`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::command::{CommandSigner, public_key_to_hex};
use crate::ids::{DeviceId, READER_PREFIX, SERVER_IDENTITY, validate_device_id};
use crate::tls::ClientIdentity;

pub const CA_VALIDITY_DAYS: i64 = 20 * 365;
pub const LEAF_VALIDITY_DAYS: i64 = 5 * 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0} already exists (pass --force to overwrite)")]
    Exists(PathBuf),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("no fleet CA in {0} (run `fleetctl certs init --dir {0}` first)")]
    NoCa(PathBuf),
    #[error("invalid name: {0}")]
    Name(String),
    #[error("command signing key: {0}")]
    Signing(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |error| PkiError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Paths inside a certificate directory.
#[derive(Debug, Clone)]
pub struct CertDir {
    root: PathBuf,
}

impl CertDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("command-signing.key")
    }
    pub fn signing_pub(&self) -> PathBuf {
        self.root.join("command-signing.pub")
    }
    pub fn device_cert(&self, id: &DeviceId) -> PathBuf {
        self.root.join("devices").join(format!("{id}.pem"))
    }
    pub fn device_key(&self, id: &DeviceId) -> PathBuf {
        self.root.join("devices").join(format!("{id}.key"))
    }
    pub fn reader_cert(&self, name: &str) -> PathBuf {
        self.root
            .join("clients")
            .join(format!("{READER_PREFIX}{name}.pem"))
    }
    pub fn reader_key(&self, name: &str) -> PathBuf {
        self.root
            .join("clients")
            .join(format!("{READER_PREFIX}{name}.key"))
    }
    pub fn server_identity(&self) -> ClientIdentity {
        ClientIdentity {
            ca: self.ca_cert(),
            cert: self.server_cert(),
            key: self.server_key(),
        }
    }
    pub fn device_identity(&self, id: &DeviceId) -> ClientIdentity {
        ClientIdentity {
            ca: self.ca_cert(),
            cert: self.device_cert(id),
            key: self.device_key(id),
        }
    }
    pub fn reader_identity(&self, name: &str) -> ClientIdentity {
        ClientIdentity {
            ca: self.ca_cert(),
            cert: self.reader_cert(name),
            key: self.reader_key(name),
        }
    }
    pub fn has_ca(&self) -> bool {
        self.ca_cert().exists() && self.ca_key().exists()
    }
}

/// Writes a file with the given mode; refuses to replace an existing file unless `force`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    if path.exists() && !force {
        return Err(PkiError::Exists(path.to_path_buf()));
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    // An existing file keeps its old mode through `open`: set it explicitly.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io(path))?;
    Ok(())
}

/// Validity window of a leaf certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// Already expired (tests: an expired certificate must be refused).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, org);
    dn
}

/// What `init` made.
#[derive(Debug, Default)]
pub struct InitReport {
    pub written: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// Makes the fleet CA, the server certificate (with `sans`) and the command-signing key.
/// Existing files are kept unless `force`; with `force` everything is made anew.
pub fn init(dir: &CertDir, sans: &[String], force: bool) -> Result<InitReport, PkiError> {
    let mut report = InitReport::default();
    if dir.has_ca() && !force {
        report.kept.push(dir.ca_cert());
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn("RVM Fleet CA", "RVM Fleet");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let v = Validity::days_from_now(CA_VALIDITY_DAYS);
        params.not_before = v.not_before;
        params.not_after = v.not_after;
        let cert = params.self_signed(&key)?;
        write_file(&dir.ca_key(), key.serialize_pem().as_bytes(), 0o600, force)?;
        write_file(&dir.ca_cert(), cert.pem().as_bytes(), 0o644, force)?;
        report.written.extend([dir.ca_key(), dir.ca_cert()]);
    }
    let ca = Ca::load(dir)?;
    if dir.server_cert().exists() && !force {
        report.kept.push(dir.server_cert());
    } else {
        let (cert, key) = ca.issue(
            SERVER_IDENTITY,
            "RVM Fleet",
            LeafKind::Server { sans: sans.to_vec() },
            Validity::days_from_now(LEAF_VALIDITY_DAYS),
        )?;
        write_file(&dir.server_key(), key.as_bytes(), 0o600, force)?;
        write_file(&dir.server_cert(), cert.as_bytes(), 0o644, force)?;
        report.written.extend([dir.server_key(), dir.server_cert()]);
    }
    if dir.signing_key().exists() && !force {
        report.kept.push(dir.signing_key());
    } else {
        let der = CommandSigner::generate_pkcs8().map_err(|e| PkiError::Signing(e.to_string()))?;
        let signer = CommandSigner::from_pkcs8(&der).map_err(|e| PkiError::Signing(e.to_string()))?;
        let pem = pem_encode("PRIVATE KEY", &der);
        write_file(&dir.signing_key(), pem.as_bytes(), 0o600, force)?;
        let hex = public_key_to_hex(&signer.public_key()) + "\n";
        write_file(&dir.signing_pub(), hex.as_bytes(), 0o644, force)?;
        report.written.extend([dir.signing_key(), dir.signing_pub()]);
    }
    Ok(report)
}

/// Loads the command-signing key written by [`init`].
pub fn load_signer(dir: &CertDir) -> Result<CommandSigner, PkiError> {
    let path = dir.signing_key();
    let pem = fs::read_to_string(&path).map_err(io(&path))?;
    let der = pem_decode(&pem).ok_or_else(|| PkiError::Signing(format!("{} is not PEM", path.display())))?;
    CommandSigner::from_pkcs8(&der).map_err(|e| PkiError::Signing(e.to_string()))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

fn pem_decode(text: &str) -> Option<Vec<u8>> {
    pem::parse(text).ok().map(|p| p.into_contents())
}

#[derive(Debug, Clone)]
pub enum LeafKind {
    /// TLS server and client (the fleet server).
    Server { sans: Vec<String> },
    /// TLS client only (devices, readers).
    Client,
}

/// A loaded CA that can issue leaf certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn load(dir: &CertDir) -> Result<Ca, PkiError> {
        if !dir.has_ca() {
            return Err(PkiError::NoCa(dir.root().to_path_buf()));
        }
        let key_path = dir.ca_key();
        let cert_path = dir.ca_cert();
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Ca { issuer })
    }

    /// Issues a leaf certificate; returns (certificate PEM, private key PEM).
    pub fn issue(
        &self,
        cn: &str,
        org: &str,
        kind: LeafKind,
        validity: Validity,
    ) -> Result<(String, String), PkiError> {
        self.issue_dn(Some(cn), org, kind, validity)
    }

    /// As [`Ca::issue`], with the CN optional (tests: a certificate without a CN must be refused).
    pub fn issue_dn(
        &self,
        cn: Option<&str>,
        org: &str,
        kind: LeafKind,
        validity: Validity,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = match &kind {
            LeafKind::Server { sans } => {
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                for san in sans {
                    p.subject_alt_names.push(match san.parse::<std::net::IpAddr>() {
                        Ok(ip) => SanType::IpAddress(ip),
                        Err(_) => SanType::DnsName(
                            san.clone()
                                .try_into()
                                .map_err(|_| PkiError::Name(format!("bad SAN {san:?}")))?,
                        ),
                    });
                }
                p.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                p
            }
            LeafKind::Client => {
                let mut p = CertificateParams::new(Vec::<String>::new())?;
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                p
            }
        };
        params.distinguished_name = match cn {
            Some(cn) => dn(cn, org),
            None => {
                let mut d = DistinguishedName::new();
                d.push(DnType::OrganizationName, org);
                d
            }
        };
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a device certificate (CN and O = device id) and writes it into `dir`.
    pub fn issue_device(
        &self,
        dir: &CertDir,
        id: &DeviceId,
        validity: Validity,
        force: bool,
    ) -> Result<ClientIdentity, PkiError> {
        let (cert, key) = self.issue(id.as_str(), id.as_str(), LeafKind::Client, validity)?;
        write_file(&dir.device_key(id), key.as_bytes(), 0o600, force)?;
        write_file(&dir.device_cert(id), cert.as_bytes(), 0o644, force)?;
        Ok(dir.device_identity(id))
    }

    /// Issues a read-only subscriber certificate (CN `reader-NAME`).
    pub fn issue_reader(
        &self,
        dir: &CertDir,
        name: &str,
        validity: Validity,
        force: bool,
    ) -> Result<ClientIdentity, PkiError> {
        validate_device_id(name).map_err(|e| PkiError::Name(format!("reader name: {e}")))?;
        let cn = format!("{READER_PREFIX}{name}");
        let (cert, key) = self.issue(&cn, "RVM Fleet readers", LeafKind::Client, validity)?;
        write_file(&dir.reader_key(name), key.as_bytes(), 0o600, force)?;
        write_file(&dir.reader_cert(name), cert.as_bytes(), 0o644, force)?;
        Ok(dir.reader_identity(name))
    }

    /// Returns the device's identity, issuing a certificate first if it has none.
    pub fn ensure_device(&self, dir: &CertDir, id: &DeviceId) -> Result<ClientIdentity, PkiError> {
        if dir.device_cert(id).exists() && dir.device_key(id).exists() {
            return Ok(dir.device_identity(id));
        }
        self.issue_device(dir, id, Validity::days_from_now(LEAF_VALIDITY_DAYS), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_keys_0600_and_never_overwrites_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path());
        let r = init(&dir, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
        assert_eq!(r.written.len(), 6);
        for key in [dir.ca_key(), dir.server_key(), dir.signing_key()] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let before = fs::read(dir.ca_key()).unwrap();
        let r = init(&dir, &["localhost".into()], false).unwrap();
        assert!(r.written.is_empty());
        assert_eq!(fs::read(dir.ca_key()).unwrap(), before);

        let ca = Ca::load(&dir).unwrap();
        let id = DeviceId::new("rvm1").unwrap();
        ca.issue_device(&dir, &id, Validity::days_from_now(1), false)
            .unwrap();
        let err = ca
            .issue_device(&dir, &id, Validity::days_from_now(1), false)
            .unwrap_err();
        assert!(matches!(err, PkiError::Exists(_)), "{err}");
        ca.issue_device(&dir, &id, Validity::days_from_now(1), true)
            .unwrap();
        let mode = fs::metadata(dir.device_key(&id)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_signing_key_round_trips_through_pem() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path());
        init(&dir, &["localhost".into()], false).unwrap();
        let signer = load_signer(&dir).unwrap();
        let hex = fs::read_to_string(dir.signing_pub()).unwrap();
        assert_eq!(hex.trim(), public_key_to_hex(&signer.public_key()));
    }
}
