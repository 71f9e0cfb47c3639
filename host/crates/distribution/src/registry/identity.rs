//! The client certificate Kiosk presents to a registry that asks for one (mutual TLS):
//! a certificate chain and its private key, both PEM, checked to belong together before
//! they are used or stored.
//!
//! Only pulls present it (`Registry::http`); oci-client, which pushes (`publish::push`),
//! has no setting for a client identity.

use rustls::pki_types::pem::{self, PemObject, SectionKind};

use super::{RegistryConfigError, RegistrySettings};

/// Largest client certificate chain, and largest private key, in PEM. A leaf and a few
/// intermediates, or an 8192-bit RSA key, take under 16 KiB; four times that leaves
/// room for long chains while keeping what a request can make Kiosk parse small.
pub const MAX_CLIENT_PEM_BYTES: usize = 64 * 1024;

/// A client certificate chain and its key, as one PEM buffer (chain first, then the key),
/// each part checked to hold only what belongs there.
#[derive(Clone)]
pub struct ClientIdentity {
    pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    /// Without the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// Why a client certificate or key cannot be used. The words never quote the PEM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the client certificate must be PEM certificates (`-----BEGIN CERTIFICATE-----`), the client's own \
         certificate first: {0}"
    )]
    Certificate(&'static str),
    #[error(
        "the client key must be one unencrypted private key in PEM (`PRIVATE KEY`, `RSA PRIVATE KEY` or \
         `EC PRIVATE KEY`): {0}"
    )]
    Key(&'static str),
    #[error("the client key does not belong to the client certificate (their public keys differ)")]
    Mismatch,
}

impl IdentityError {
    /// The fault is the key's (a bad key, or one that does not match the certificate),
    /// else the certificate's.
    pub fn is_key(&self) -> bool {
        matches!(self, Self::Key(_) | Self::Mismatch)
    }
}

impl ClientIdentity {
    /// Checks `certificate` (PEM certificates, the client's first) and `key` (one
    /// unencrypted private key) and that the key is the certificate's: everything TLS
    /// will check when it uses them, so that a bad pair is refused when it is configured.
    pub fn from_pem(certificate: &[u8], key: &[u8]) -> Result<Self, IdentityError> {
        let identity = Self::parse(certificate, key)?;
        reqwest::Client::builder()
            .identity(identity.reqwest()?)
            .build()
            .map_err(|e| build_error(&e).unwrap_or(IdentityError::Key("TLS cannot use it")))?;
        Ok(identity)
    }

    /// Checks the PEM of both parts (not yet whether they belong together).
    fn parse(certificate: &[u8], key: &[u8]) -> Result<Self, IdentityError> {
        use IdentityError::{Certificate, Key};
        if certificate.len() > MAX_CLIENT_PEM_BYTES {
            return Err(Certificate("it is longer than 64 KiB"));
        }
        if key.len() > MAX_CLIENT_PEM_BYTES {
            return Err(Key("it is longer than 64 KiB"));
        }
        let mut certificates = 0;
        for section in sections(certificate).map_err(|()| Certificate("it is not valid PEM"))? {
            match section {
                SectionKind::Certificate => certificates += 1,
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                    return Err(Certificate("it holds a private key (give the key as the client key)"));
                }
                _ => return Err(Certificate("it holds PEM sections other than certificates")),
            }
        }
        if certificates == 0 {
            return Err(Certificate("no certificate found"));
        }
        if contains(key, b"ENCRYPTED") {
            return Err(Key("it is encrypted (passphrase-protected)"));
        }
        let mut keys = 0;
        for section in sections(key).map_err(|()| Key("it is not valid PEM"))? {
            match section {
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => keys += 1,
                _ => return Err(Key("it holds PEM sections other than the private key")),
            }
        }
        match keys {
            0 => return Err(Key("no private key found")),
            1 => {}
            _ => return Err(Key("it holds more than one private key")),
        }
        let mut pem = certificate.to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(key);
        Ok(Self { pem })
    }

    /// As reqwest takes it.
    pub(super) fn reqwest(&self) -> Result<reqwest::Identity, IdentityError> {
        reqwest::Identity::from_pem(&self.pem).map_err(|_| IdentityError::Key("it is not valid PEM"))
    }
}

/// The kinds of the PEM sections of `text` (sections of kinds nobody reads are skipped,
/// as by the TLS stack).
fn sections(text: &[u8]) -> Result<Vec<SectionKind>, ()> {
    <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(text)
        .map(|section| section.map(|(kind, _)| kind).map_err(|_: pem::Error| ()))
        .collect()
}

fn contains(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len()).any(|w| w == word)
}

/// What building a TLS client with an identity says about the identity, if anything.
fn build_error(e: &reqwest::Error) -> Option<IdentityError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InconsistentKeys(_) => IdentityError::Mismatch,
                rustls::Error::InvalidCertificate(_) => {
                    IdentityError::Certificate("the first certificate is not a valid X.509 certificate")
                }
                _ => IdentityError::Key("not a private key TLS supports (RSA, ECDSA P-256 or P-384, Ed25519)"),
            });
        }
        source = err.source();
    }
    None
}

/// The settings' client identity (files of the config file, or the inline PEM the API
/// stores), if they set one, checked as [`ClientIdentity::from_pem`] does; a part that
/// cannot be read or used names the registry and the setting.
pub(super) fn from_settings(settings: &RegistrySettings) -> Result<Option<ClientIdentity>, RegistryConfigError> {
    let host = &settings.host;
    let read = |setting: &'static str, path: &Option<std::path::PathBuf>, inline: &Option<String>| match (path, inline)
    {
        (Some(path), _) => std::fs::read(path).map(Some).map_err(|e| RegistryConfigError::ClientIdentityFile {
            host: host.clone(),
            setting,
            path: path.display().to_string(),
            error: e.to_string(),
        }),
        (None, Some(text)) => Ok(Some(text.as_bytes().to_vec())),
        (None, None) => Ok(None),
    };
    let certificate = read("client-certificate", &settings.client_certificate, &settings.client_certificate_pem)?;
    let key = read("client-key", &settings.client_key, &settings.client_key_pem)?;
    let (certificate, key) = match (certificate, key) {
        (None, None) => return Ok(None),
        (Some(certificate), Some(key)) => (certificate, key),
        (Some(_), None) => {
            return Err(RegistryConfigError::Invalid(format!("registry {host}: client-certificate needs client-key")));
        }
        (None, Some(_)) => {
            return Err(RegistryConfigError::Invalid(format!("registry {host}: client-key needs client-certificate")));
        }
    };
    ClientIdentity::from_pem(&certificate, &key).map(Some).map_err(|error| {
        let setting = match (error.is_key(), settings.client_key.is_some(), settings.client_certificate.is_some()) {
            (true, true, _) => "client-key",
            (true, false, _) => "client-key-pem",
            (false, _, true) => "client-certificate",
            (false, _, false) => "client-certificate-pem",
        };
        RegistryConfigError::ClientIdentity { host: host.clone(), setting, error }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

    #[test]
    fn each_part_holds_only_what_belongs_there() {
        let parse = |c: &str, k: &str| ClientIdentity::parse(c.as_bytes(), k.as_bytes()).map(|_| ());
        parse(CERT, KEY).unwrap();
        let cases = [
            ("", KEY, IdentityError::Certificate("no certificate found")),
            (KEY, KEY, IdentityError::Certificate("it holds a private key (give the key as the client key)")),
            (CERT, "", IdentityError::Key("no private key found")),
            (CERT, CERT, IdentityError::Key("it holds PEM sections other than the private key")),
            (CERT, &KEY.repeat(2), IdentityError::Key("it holds more than one private key")),
            (
                CERT,
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                IdentityError::Key("it is encrypted (passphrase-protected)"),
            ),
            (CERT, "-----BEGIN PRIVATE KEY-----\nAAAA\n", IdentityError::Key("it is not valid PEM")),
        ];
        for (certificate, key, expected) in cases {
            assert_eq!(parse(certificate, key), Err(expected.clone()), "{expected}");
            assert_eq!(expected.is_key(), matches!(expected, IdentityError::Key(_)));
        }
        let big = "x".repeat(MAX_CLIENT_PEM_BYTES + 1);
        assert!(matches!(parse(&big, KEY), Err(IdentityError::Certificate(_))));
        // Parsed, but not a certificate and key TLS can use.
        assert!(ClientIdentity::from_pem(CERT.as_bytes(), KEY.as_bytes()).is_err());
    }
}
