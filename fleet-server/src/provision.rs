//! Provisioning bundles: everything one RVM needs to join the fleet, made by
//! `fleetctl certs bundle ID --dir certs --out ID.tar` and consumed by `config/install.sh
//! --bundle ID.tar`.
//!
//! A bundle is a directory `ID/` (or a tar of it, plain POSIX ustar so `tar -xf` of busybox,
//! GNU or BSD tar reads it) holding:
//!
//! | file | mode | what |
//! | --- | --- | --- |
//! | `device.pem` | 0644 | the device certificate (CN and O = ID), issued if the CA has none yet |
//! | `device.key` | 0600 | its private key |
//! | `ca.pem` | 0644 | the fleet CA (trust anchor for the broker's certificate) |
//! | `command-signing.pub` | 0644 | the server's Ed25519 command-signing public key (hex) |
//! | `provision.env` | 0644 | `DEVICE_ID=`, and `BROKER=` / `SITE=` when given |
//!
//! The bundle holds a private key: the tar and the directory are written 0600 / 0700 and
//! never replace an existing one unless asked. The fleet CA's own key never goes in.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::DeviceId;
use common::pki::{self, Ca, CertDir, PkiError};

/// Name of the key=value file of a bundle.
pub const PROVISION_ENV: &str = "provision.env";

/// Longest site name a bundle (and the installer) accepts.
pub const MAX_SITE_LEN: usize = common::ids::SITE_ID_MAX_LEN;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{0} already exists (pass --force to replace it)")]
    Exists(PathBuf),
    #[error("--broker {0:?} is not host:port (letters, digits, '.', '-', '[', ']', ':')")]
    Broker(String),
    #[error("--site {0:?}: 1 to {MAX_SITE_LEN} characters of [A-Za-z0-9 ._-]")]
    Site(String),
    #[error("tar entry {0:?}: name longer than 99 bytes")]
    TarName(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |error| ProvisionError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Path inside the bundle, `ID/name`.
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// Checks `host:port` with characters the installer can put in a TOML string and a sed
/// expression unescaped.
pub fn check_broker(broker: &str) -> Result<(), ProvisionError> {
    let charset_ok = broker
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !charset_ok || common::addr::split_host_port(broker).is_none() {
        return Err(ProvisionError::Broker(broker.to_string()));
    }
    Ok(())
}

/// Checks a site name (the installer's rule too: `[A-Za-z0-9 ._-]{1,64}`).
pub fn check_site(site: &str) -> Result<(), ProvisionError> {
    if common::ids::is_site_id(site) {
        Ok(())
    } else {
        Err(ProvisionError::Site(site.to_string()))
    }
}

/// The `provision.env` text.
pub fn provision_env(device: &DeviceId, broker: Option<&str>, site: Option<&str>) -> String {
    let mut s = format!(
        "# RVM Fleet provisioning bundle, made by fleetctl {}\nDEVICE_ID={device}\n",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(b) = broker {
        s.push_str(&format!("BROKER={b}\n"));
    }
    if let Some(site) = site {
        s.push_str(&format!("SITE={site}\n"));
    }
    s
}

/// The files of `device`'s bundle; issues the device certificate first if the CA directory
/// has none for it.
pub fn bundle_files(
    dir: &CertDir,
    device: &DeviceId,
    broker: Option<&str>,
    site: Option<&str>,
) -> Result<Vec<BundleFile>, ProvisionError> {
    if let Some(b) = broker {
        check_broker(b)?;
    }
    if let Some(s) = site {
        check_site(s)?;
    }
    let ident = Ca::load(dir)?.ensure_device(dir, device)?;
    let read = |p: &Path| fs::read(p).map_err(io(p));
    let signing = dir.signing_pub();
    if !signing.exists() {
        return Err(PkiError::Signing(format!(
            "{} does not exist (run `fleetctl certs init --dir {}`)",
            signing.display(),
            dir.root().display()
        ))
        .into());
    }
    let f = |name: &str, mode: u32, contents: Vec<u8>| BundleFile {
        path: format!("{device}/{name}"),
        mode,
        contents,
    };
    Ok(vec![
        f("device.pem", 0o644, read(&ident.cert)?),
        f("device.key", 0o600, read(&ident.key)?),
        f("ca.pem", 0o644, read(&ident.ca)?),
        f("command-signing.pub", 0o644, read(&signing)?),
        f(
            PROVISION_ENV,
            0o644,
            provision_env(device, broker, site).into_bytes(),
        ),
    ])
}

/// Writes the bundle as a tar file (`out` ends in `.tar`) or as a directory `out/ID/...`.
/// Returns what was written.
pub fn write_bundle(files: &[BundleFile], out: &Path, force: bool) -> Result<Vec<PathBuf>, ProvisionError> {
    if out.extension().is_some_and(|e| e == "tar") {
        if out.exists() && !force {
            return Err(ProvisionError::Exists(out.to_path_buf()));
        }
        let bytes = ustar(files, common::time::now_ms().max(0) as u64 / 1000)?;
        pki::write_file(out, &bytes, 0o600, true)?;
        return Ok(vec![out.to_path_buf()]);
    }
    let mut written = Vec::new();
    for f in files {
        let path = out.join(&f.path);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io(parent))?;
            fs::set_permissions(parent, fs::Permissions::from_mode(0o700)).map_err(io(parent))?;
        }
        if path.exists() && !force {
            return Err(ProvisionError::Exists(path));
        }
        pki::write_file(&path, &f.contents, f.mode, true)?;
        written.push(path);
    }
    Ok(written)
}

/// A POSIX ustar archive of `files` (regular files, owned by root, with their modes) and the
/// directories their paths name.
pub fn ustar(files: &[BundleFile], mtime: u64) -> Result<Vec<u8>, ProvisionError> {
    let mut out = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        if let Some((d, _)) = f.path.rsplit_once('/') {
            let d = format!("{d}/");
            if !dirs.contains(&d) {
                out.extend_from_slice(&tar_header(&d, 0o700, 0, mtime, b'5')?);
                dirs.push(d);
            }
        }
        out.extend_from_slice(&tar_header(
            &f.path,
            f.mode,
            f.contents.len() as u64,
            mtime,
            b'0',
        )?);
        out.extend_from_slice(&f.contents);
        let pad = (512 - f.contents.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    // end of archive: two zero blocks
    out.extend(std::iter::repeat_n(0u8, 1024));
    Ok(out)
}

/// `value` in octal, zero-padded to `width - 1` digits and NUL-terminated.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    let bytes = s.as_bytes();
    let start = bytes.len().saturating_sub(width);
    field[..width].copy_from_slice(&bytes[start..]);
    field[width] = 0;
}

fn tar_header(name: &str, mode: u32, size: u64, mtime: u64, kind: u8) -> Result<[u8; 512], ProvisionError> {
    let mut h = [0u8; 512];
    if name.len() > 99 {
        return Err(ProvisionError::TarName(name.to_string()));
    }
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0); // uid
    octal(&mut h[116..124], 0); // gid
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // the checksum is computed with its own field as eight spaces
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_file(path: &str, mode: u32, contents: &[u8]) -> BundleFile {
        BundleFile {
            path: path.into(),
            mode,
            contents: contents.to_vec(),
        }
    }

    #[test]
    fn a_ustar_header_has_the_name_mode_size_and_a_valid_checksum() {
        let t = ustar(&[build_file("rvm1/device.key", 0o600, b"secret")], 1_700_000_000).unwrap();
        // dir header, file header, one data block, two end blocks
        assert_eq!(t.len(), 512 * 5);
        let h = &t[512..1024];
        assert_eq!(&h[..15], b"rvm1/device.key");
        assert_eq!(&h[100..108], b"0000600\0");
        assert_eq!(&h[124..136], b"00000000006\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..263], b"ustar\0");
        let mut copy = [0u8; 512];
        copy.copy_from_slice(h);
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|b| u64::from(*b)).sum();
        let written = std::str::from_utf8(&h[148..154]).unwrap();
        assert_eq!(u64::from_str_radix(written, 8).unwrap(), sum);
        assert_eq!(&t[1024..1030], b"secret");
        assert_eq!(t[0..5], *b"rvm1/");
        assert_eq!(t[156], b'5');
    }

    #[test]
    fn a_long_name_is_refused_not_truncated() {
        let name = format!("rvm1/{}", "x".repeat(100));
        assert!(matches!(
            ustar(&[build_file(&name, 0o644, b"")], 0),
            Err(ProvisionError::TarName(_))
        ));
    }

    #[test]
    fn broker_and_site_are_checked() {
        check_broker("fleet.example.com:8883").unwrap();
        check_broker("[::1]:8883").unwrap();
        for bad in ["fleet.example.com", "a b:1", "x:0", "evil\"host:1", "h:1/x"] {
            assert!(check_broker(bad).is_err(), "{bad}");
        }
        check_site("store-12").unwrap();
        check_site("Oslo Storo 2.1").unwrap();
        for bad in ["", "a\"b", "a/b", &"x".repeat(65)] {
            assert!(check_site(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bundle_has_the_device_identity_ca_signing_key_and_env_but_not_the_ca_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path().join("certs"));
        pki::init(&dir, &["localhost".into()], false).unwrap();
        let id = DeviceId::new("rvm0042").unwrap();
        let files = bundle_files(&dir, &id, Some("fleet.example.com:8883"), Some("store-12")).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "rvm0042/device.pem",
                "rvm0042/device.key",
                "rvm0042/ca.pem",
                "rvm0042/command-signing.pub",
                "rvm0042/provision.env"
            ]
        );
        let ca_key = fs::read(dir.ca_key()).unwrap();
        assert!(files.iter().all(|f| f.contents != ca_key));
        let env = String::from_utf8(files[4].contents.clone()).unwrap();
        assert!(env.contains("DEVICE_ID=rvm0042\nBROKER=fleet.example.com:8883\nSITE=store-12\n"));
        assert_eq!(files[1].mode, 0o600);

        let out = tmp.path().join("rvm0042.tar");
        write_bundle(&files, &out, false).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(
            write_bundle(&files, &out, false),
            Err(ProvisionError::Exists(_))
        ));
        let d = tmp.path().join("bundle");
        write_bundle(&files, &d, false).unwrap();
        let key = d.join("rvm0042/device.key");
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(d.join("rvm0042")).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
