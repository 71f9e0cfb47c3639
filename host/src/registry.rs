//! OCI registries through `oci-client`: anonymous, basic auth, bearer tokens (the
//! `WWW-Authenticate` token flow is oci-client's), HTTPS with an operator CA bundle, and
//! plain HTTP only for registries marked insecure. Every request is bounded by
//! timeouts and retried with exponential backoff and jitter on 429, 5xx and connection
//! errors; blobs are fetched by digest, size-capped and hashed while streaming.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::artifact::{ArtifactError, BlobSource, Descriptor, OCI_MANIFEST, Part, check_cap};

/// Operator settings of one registry (`[[registries]]` in the operator config).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegistrySettings {
    /// `host[:port]` as it appears in references.
    pub host: String,
    /// Plain HTTP. Only for registries the operator marks so.
    #[serde(default)]
    pub insecure: bool,
    /// PEM file of CA certificates to trust for this registry (in addition to the
    /// system's roots).
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// The same, inline (PEM text), as the operator API stores it.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Basic-auth (and token-flow) credentials.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A pre-issued bearer token (instead of username/password).
    #[serde(default)]
    pub token: Option<String>,
}

/// Timeouts and retries of registry requests.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransferSettings {
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// Whole-request bound (one attempt), including reading the body.
    pub request_timeout_ms: u64,
    /// Attempts after the first.
    pub retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            // A registry that does not accept a connection in 5 s is down for our purpose.
            connect_timeout_ms: 5_000,
            // A stalled transfer is detected after 30 s without a byte.
            read_timeout_ms: 30_000,
            // A 50 MiB component at 1 MiB/s fits; anything slower is better retried.
            request_timeout_ms: 120_000,
            // Four retries ride out a registry restart without hiding an outage.
            retries: 4,
            backoff_base_ms: 200,
            backoff_max_ms: 10_000,
        }
    }
}

/// A configured registry client.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    transfer: TransferSettings,
    host: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("host", &self.host).finish_non_exhaustive()
    }
}

/// The registry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    #[error("registry {host}: cannot read CA bundle {path}: {error}")]
    CaBundle { host: String, path: String, error: String },
    #[error("registry {host}: set either a token or username and password, not both")]
    Credentials { host: String },
}

impl Registry {
    pub fn new(settings: &RegistrySettings, transfer: TransferSettings) -> Result<Self, RegistryConfigError> {
        let host = settings.host.clone();
        let mut extra_root_certificates = Vec::new();
        if let Some(pem) = &settings.ca_pem {
            extra_root_certificates
                .push(Certificate { encoding: CertificateEncoding::Pem, data: pem.as_bytes().to_vec() });
        }
        if let Some(path) = &settings.ca_bundle {
            let data = std::fs::read(path).map_err(|e| RegistryConfigError::CaBundle {
                host: host.clone(),
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            extra_root_certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
        }
        let auth = match (&settings.token, &settings.username, &settings.password) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(RegistryConfigError::Credentials { host });
            }
            (Some(token), None, None) => RegistryAuth::Bearer(token.clone()),
            (None, Some(user), pass) => RegistryAuth::Basic(user.clone(), pass.clone().unwrap_or_default()),
            _ => RegistryAuth::Anonymous,
        };
        let config = ClientConfig {
            protocol: if settings.insecure {
                ClientProtocol::HttpsExcept(vec![host.clone()])
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates,
            connect_timeout: Some(Duration::from_millis(transfer.connect_timeout_ms)),
            read_timeout: Some(Duration::from_millis(transfer.read_timeout_ms)),
            user_agent: concat!("kiosk/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Ok(Self { client: Client::new(config), auth, transfer, host })
    }

    /// The source for one repository of this registry (`acme/budget-pacing`).
    pub fn repository(&self, repository: &str) -> RegistrySource<'_> {
        RegistrySource { registry: self, repository: repository.to_string() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn auth(&self) -> &RegistryAuth {
        &self.auth
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.transfer.backoff_base_ms.saturating_mul(1 << attempt.min(16)).min(self.transfer.backoff_max_ms);
        // Full jitter: spread retries of many replicas over the whole interval.
        Duration::from_millis(rand::rng().random_range(exp / 2..=exp.max(1)))
    }

    /// Runs `op` with the per-request timeout, retrying transient failures.
    pub async fn with_retries<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ArtifactError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut attempt = 0;
        loop {
            let outcome = tokio::time::timeout(Duration::from_millis(self.transfer.request_timeout_ms), op()).await;
            let (message, transient) = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => (describe(&e), is_transient(&e)),
                Err(_) => (format!("no answer within {} ms", self.transfer.request_timeout_ms), true),
            };
            if !transient || attempt >= self.transfer.retries {
                let tries = if transient { format!(" (after {} attempts)", attempt + 1) } else { String::new() };
                return Err(ArtifactError::Source {
                    source_name: self.host.clone(),
                    message: format!("{what}: {message}{tries}"),
                });
            }
            let wait = self.backoff(attempt);
            tracing::warn!(registry = %self.host, %what, %message, attempt, ?wait, "transient registry failure; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RequestError(e) => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

fn describe(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RequestError(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
        other => other.to_string(),
    }
}

/// One repository of a registry, as a `BlobSource`.
#[derive(Debug)]
pub struct RegistrySource<'a> {
    registry: &'a Registry,
    repository: String,
}

impl RegistrySource<'_> {
    fn reference(&self, tag: &str) -> Reference {
        Reference::with_tag(self.registry.host.clone(), self.repository.clone(), tag.to_string())
    }

    fn by_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(self.registry.host.clone(), self.repository.clone(), digest.to_string())
    }
}

impl BlobSource for RegistrySource<'_> {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.host, self.repository)
    }

    async fn resolve(&self, tag: &str, cap: u64) -> Result<(Descriptor, Vec<u8>), ArtifactError> {
        let reference = self.reference(tag);
        let client = &self.registry.client;
        let auth = &self.registry.auth;
        // Basic credentials or a token from the WWW-Authenticate flow, cached per repository.
        self.registry.with_retries("authenticate", || client.auth(&reference, auth, RegistryOperation::Pull)).await?;
        let result = self
            .registry
            .with_retries(&format!("resolve tag {tag}"), || client.pull_manifest_raw(&reference, auth, &[OCI_MANIFEST]))
            .await;
        let (bytes, digest) = match result {
            Ok(found) => found,
            Err(ArtifactError::Source { message, .. })
                if message.contains("manifest unknown") || message.contains("not found") =>
            {
                return Err(ArtifactError::TagNotFound { tag: tag.to_string(), source_name: self.name() });
            }
            Err(e) => return Err(e),
        };
        if bytes.len() as u64 > cap {
            return Err(ArtifactError::TooLarge { part: Part::OciManifest, size: bytes.len() as u64, cap });
        }
        let desc = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size: bytes.len() as u64,
            annotations: Default::default(),
        };
        let bytes = crate::artifact::read_verified(Part::OciManifest, &desc, &bytes[..])?;
        Ok((desc, bytes))
    }

    async fn fetch(&self, part: Part, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ArtifactError> {
        check_cap(part, desc, cap)?;
        let reference = self.by_digest(&desc.digest);
        let layer = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size as i64,
            ..OciDescriptor::default()
        };
        let client = &self.registry.client;
        let what = format!("fetch {part} {}", desc.digest);
        self.registry
            .with_retries(&what, || async {
                let mut stream = client.pull_blob_stream(&reference, &layer).await?;
                let mut hasher = Sha256::new();
                let mut bytes = Vec::with_capacity(desc.size.min(1 << 20) as usize);
                while let Some(chunk) = stream.stream.next().await {
                    let chunk = match chunk {
                        Ok(chunk) => chunk,
                        // oci-client checks the digest too; its verdict is final, not transient.
                        Err(e) => match e.get_ref().and_then(|inner| inner.downcast_ref::<DigestError>()) {
                            Some(DigestError::VerificationError { actual, .. }) => {
                                return Ok(Err(ArtifactError::DigestMismatch {
                                    part,
                                    digest: desc.digest.clone(),
                                    actual: actual.clone(),
                                }));
                            }
                            _ => return Err(e.into()),
                        },
                    };
                    if (bytes.len() + chunk.len()) as u64 > desc.size {
                        // Longer than its descriptor: refuse without reading further.
                        return Ok(Err(ArtifactError::SizeMismatch {
                            part,
                            digest: desc.digest.clone(),
                            expected: desc.size,
                            actual: (bytes.len() + chunk.len()) as u64,
                        }));
                    }
                    hasher.update(&chunk);
                    bytes.extend_from_slice(&chunk);
                }
                let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                if bytes.len() as u64 != desc.size {
                    return Ok(Err(ArtifactError::SizeMismatch {
                        part,
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        actual: bytes.len() as u64,
                    }));
                }
                if actual != desc.digest {
                    return Ok(Err(ArtifactError::DigestMismatch { part, digest: desc.digest.clone(), actual }));
                }
                Ok(Ok(bytes))
            })
            .await?
    }
}
