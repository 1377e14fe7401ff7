//! TLS settings for an `https://` Local API: which certificate authorities to
//! trust for the LAPI's certificate, and an optional client certificate (CrowdSec
//! authenticates bouncers and agents by the OU of a certificate its CA signed,
//! instead of an API key or a password).
//!
//! Everything is read and parsed here, once, before any task starts, so a bad
//! file is a configuration error and never a retry loop. rustls with the ring
//! provider: no OpenSSL, no system package beyond the CA bundle.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
};

/// Where the system's trusted roots are read from when `ca_cert` is empty
/// (Debian/Ubuntu's ca-certificates first, then Fedora/RHEL, Alpine/BSD).
pub const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read crowdsec.{field} {path}: {err}")]
    Read {
        field: &'static str,
        path: String,
        err: std::io::Error,
    },
    #[error("crowdsec.{field} {path}: {what}")]
    Parse {
        field: &'static str,
        path: String,
        what: String,
    },
    #[error(
        "crowdsec.ca_cert is empty and no system CA bundle was found ({}): install ca-certificates or set ca_cert",
        SYSTEM_BUNDLES.join(", ")
    )]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Provider(rustls::Error),
    #[error("crowdsec.{cert_field} and crowdsec.{key_field} do not go together: {err}")]
    Pair {
        cert_field: &'static str,
        key_field: &'static str,
        err: rustls::Error,
    },
}

/// A client certificate chain and its key, with the config field names for messages.
pub struct ClientAuth<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub cert_field: &'static str,
    pub key_field: &'static str,
}

/// What a TLS connection is built from; `material` is every byte read, so that a
/// reload can tell whether a file changed behind an unchanged config.
#[derive(Debug)]
pub struct Loaded {
    pub config: Arc<ClientConfig>,
    pub material: Vec<u8>,
}

/// The trusted roots: the PEM bundle at `ca_cert`, or the system bundle.
fn roots(ca_cert: &str, material: &mut Vec<u8>) -> Result<RootCertStore, TlsError> {
    let (field, path) = if ca_cert.is_empty() {
        let found = SYSTEM_BUNDLES
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or(TlsError::NoSystemRoots)?;
        ("ca_cert (system bundle)", *found)
    } else {
        ("ca_cert", ca_cert)
    };
    let certs = read_certs(field, path, material)?;
    let mut store = RootCertStore::empty();
    // A system bundle may hold a certificate webpki cannot use; skip those there,
    // but a CA file of the operator's own must be usable as a whole.
    let (added, skipped) = store.add_parsable_certificates(certs);
    if added == 0 || !ca_cert.is_empty() && skipped > 0 {
        return Err(TlsError::Parse {
            field,
            path: path.into(),
            what: format!("{skipped} certificates are not usable as trust anchors, {added} are"),
        });
    }
    Ok(store)
}

fn read(field: &'static str, path: &str, material: &mut Vec<u8>) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|err| TlsError::Read {
        field,
        path: path.into(),
        err,
    })?;
    material.extend_from_slice(path.as_bytes());
    material.push(0);
    material.extend_from_slice(&bytes);
    Ok(bytes)
}

fn read_certs(
    field: &'static str,
    path: &str,
    material: &mut Vec<u8>,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(field, path, material)?;
    let parse = |what: String| TlsError::Parse {
        field,
        path: path.into(),
        what,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(parse("no PEM CERTIFICATE in it".into()));
    }
    Ok(certs)
}

fn read_key(
    field: &'static str,
    path: &str,
    material: &mut Vec<u8>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(field, path, material)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Parse {
        field,
        path: path.into(),
        what: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1) in it: {e}"),
    })
}

/// Builds the client configuration: server verified against `ca_cert` (or the
/// system roots), with the client certificate when `auth` is given.
pub fn load(ca_cert: &str, auth: Option<ClientAuth<'_>>) -> Result<Loaded, TlsError> {
    let mut material = Vec::new();
    let roots = roots(ca_cert, &mut material)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots);
    let config = match auth {
        None => builder.with_no_client_auth(),
        Some(a) => {
            let chain = read_certs(a.cert_field, a.cert, &mut material)?;
            let key = read_key(a.key_field, a.key, &mut material)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| TlsError::Pair {
                    cert_field: a.cert_field,
                    key_field: a.key_field,
                    err,
                })?
        }
    };
    Ok(Loaded {
        config: Arc::new(config),
        material,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway self-signed P-256 certificate, its key and an unrelated key
    // (made for these tests with `openssl req -x509 -newkey ec`).
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBlTCCATugAwIBAgIUS7Lty2ZFrQ+kEjXifwfXz9iRK/MwCgYIKoZIzj0EAwIw\nHzEdMBsGA1UEAwwUc2Nhbi1ndWFyZCB1bml0IHRlc3QwIBcNMjYxMTI3MDkwNTE5\nWhgPMjEyNjExMDMwOTA1MTlaMB8xHTAbBgNVBAMMFHNjYW4tZ3VhcmQgdW5pdCB0\nZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUDdoaWPGA6GDJ76AFqqj1AMB\n66FnXhDR0wLYP2HZxRNX57Ogohe3jeHUrnrQ3+PYnlroJCnAmo35EDbvk3Fdi6NT\nMFEwHQYDVR0OBBYEFAFmL+aok6w8zaK+gz9jkDo3PhNkMB8GA1UdIwQYMBaAFAFm\nL+aok6w8zaK+gz9jkDo3PhNkMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID\nSAAwRQIhAOqOG4rEVt2o9oZ+VXdQekfNNsEAbIwbVUj9by25NVAAAiB/35gKdKuP\nZwx9Mpig3/QOVlRPVQMQ7/pK6no5iwbBHw==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8JJEWW+Mrriwvpdm\na0m4tOFbboT1RzusgbJkfgOwCsyhRANCAARQN2hpY8YDoYMnvoAWqqPUAwHroWde\nENHTAtg/YdnFE1fns6CiF7eN4dSuetDf49ieWugkKcCajfkQNu+TcV2L\n-----END PRIVATE KEY-----\n";
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfadKBvhcaJTyN17a\nKtPCZCnSKU/IoZcktwopWJKEyVShRANCAAQk8oq4O7ziK4883dEp9d/Gbi+iSWNh\nfKbniXgq3BAJKfquLbmQ6DTPX/JnUZuUzG4DE+0zp1a6f7/c7Yotr+0S\n-----END PRIVATE KEY-----\n";

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("sg-tls-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
        fn file(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.to_str().unwrap().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn auth<'a>(cert: &'a str, key: &'a str) -> Option<ClientAuth<'a>> {
        Some(ClientAuth {
            cert,
            key,
            cert_field: "bouncer_tls_cert",
            key_field: "bouncer_tls_key",
        })
    }

    #[test]
    fn files_are_read_and_checked() {
        let d = Dir::new("files");
        let ca = d.file("ca.pem", CERT);
        let key = d.file("key.pem", KEY);
        let other = d.file("other.pem", OTHER_KEY);
        let junk = d.file("junk.pem", "not PEM at all\n");
        let a = load(&ca, None).unwrap();
        let b = load(&ca, auth(&ca, &key)).unwrap();
        assert_ne!(a.material, b.material, "the client files count as material");

        let e = load(&d.0.join("missing").to_string_lossy(), None).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot read crowdsec.ca_cert"),
            "{e}"
        );
        let e = load(&junk, None).unwrap_err().to_string();
        assert!(
            e.contains("crowdsec.ca_cert") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );
        let e = load(&ca, auth(&ca, &junk)).unwrap_err().to_string();
        assert!(
            e.contains("crowdsec.bouncer_tls_key") && e.contains("private key"),
            "{e}"
        );
        let e = load(&ca, auth(&key, &key)).unwrap_err().to_string();
        assert!(e.contains("crowdsec.bouncer_tls_cert"), "{e}");
        let e = load(&ca, auth(&ca, &other)).unwrap_err().to_string();
        assert!(e.contains("do not go together"), "{e}");
    }

    #[test]
    fn system_roots_when_no_ca_is_given() {
        match load("", None) {
            Ok(l) => assert!(!l.material.is_empty()),
            Err(e) => assert!(matches!(e, TlsError::NoSystemRoots), "{e}"),
        }
    }
}
