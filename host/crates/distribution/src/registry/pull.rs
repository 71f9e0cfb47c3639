//! Pulling from one repository: the request helpers of `RegistrySource`, manifests by
//! tag and blobs by digest (size-capped and hashed while streaming).

use reqwest::header::ACCEPT;
use reqwest::{RequestBuilder, Response, StatusCode};
use sha2::{Digest as _, Sha256};

use super::RegistrySource;
use super::auth::Authorization;
use super::error::{Attempt, RemoteFailure};
use crate::artifact::{ArtifactError, BlobSource, Descriptor, OCI_MANIFEST, Part, check_cap};
use kiosk_domain::digest::Digest;

/// Reads an answer's body, at most `cap` bytes (`None`: longer than that).
pub(super) async fn read_capped(mut resp: Response, cap: u64) -> Result<Option<Vec<u8>>, Attempt> {
    if resp.content_length().is_some_and(|len| len > cap) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Attempt::transport(&e))? {
        if (bytes.len() + chunk.len()) as u64 > cap {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

impl RegistrySource<'_> {
    fn url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.registry.base, self.repository)
    }

    pub(super) fn get(&self, url: impl reqwest::IntoUrl, auth: &Authorization) -> RequestBuilder {
        let request = self.registry.http.get(url);
        match auth {
            Authorization::None => request,
            Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
            Authorization::Bearer(token) => request.bearer_auth(token),
        }
    }

    pub(super) async fn send(request: RequestBuilder) -> Result<Response, Attempt> {
        request.send().await.map_err(|e| Attempt::transport(&e))
    }

    pub(super) async fn success(resp: Response, failure: fn(u16) -> RemoteFailure) -> Result<Response, Attempt> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status().as_u16();
        Err(Attempt::status(failure(code), resp).await)
    }

    pub(super) fn refuse_names(&self) -> Result<(), ArtifactError> {
        if crate::artifact::valid_repository(&self.repository) {
            return Ok(());
        }
        Err(ArtifactError::Source {
            source_name: self.registry.host.clone(),
            message: "the repository is not a valid OCI repository name".into(),
        })
    }
}

impl BlobSource for RegistrySource<'_> {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.host, self.repository)
    }

    async fn resolve(&self, tag: &str, cap: u64) -> Result<(Descriptor, Vec<u8>), ArtifactError> {
        self.refuse_names()?;
        if !crate::artifact::valid_tag(tag) {
            return Err(ArtifactError::TagNotFound { tag: tag.to_string(), source_name: self.name() });
        }
        let auth = self.authorization().await?;
        let url = self.url("manifests", tag);
        let found = self
            .registry
            .pull(&self.name(), &format!("resolve tag {tag}"), || async {
                let resp = Self::send(self.get(&url, &auth).header(ACCEPT, OCI_MANIFEST)).await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                let resp = Self::success(resp, RemoteFailure::Status).await?;
                let length = resp.content_length();
                Ok(Some(read_capped(resp, cap).await?.ok_or(length)))
            })
            .await?;
        let bytes = match found {
            None => return Err(ArtifactError::TagNotFound { tag: tag.to_string(), source_name: self.name() }),
            Some(Err(length)) => {
                let size = length.unwrap_or(cap.saturating_add(1));
                return Err(ArtifactError::TooLarge { part: Part::OciManifest, size, cap });
            }
            Some(Ok(bytes)) => bytes,
        };
        let desc = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&bytes).to_string(),
            size: bytes.len() as u64,
            annotations: Default::default(),
        };
        Ok((desc, bytes))
    }

    async fn fetch(&self, part: Part, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ArtifactError> {
        check_cap(part, desc, cap)?;
        self.refuse_names()?;
        // The digest comes from the remote manifest: checked before it goes into a URL.
        crate::artifact::check_digest(part, desc)?;
        let Some(digest) = Digest::parse(&desc.digest) else {
            return Err(ArtifactError::Source { source_name: self.name(), message: "malformed digest".into() });
        };
        let auth = self.authorization().await?;
        let url = self.url("blobs", digest.as_str());
        let what = format!("fetch {part} {digest}");
        self.registry
            .pull(&self.name(), &what, || async {
                let mut resp = Self::success(Self::send(self.get(&url, &auth)).await?, RemoteFailure::Status).await?;
                let size_mismatch = |actual: u64| ArtifactError::SizeMismatch {
                    part,
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual,
                };
                if let Some(length) = resp.content_length()
                    && length > desc.size
                {
                    return Ok(Err(size_mismatch(length)));
                }
                let mut hasher = Sha256::new();
                let mut bytes = Vec::with_capacity(desc.size.min(1 << 20) as usize);
                while let Some(chunk) = resp.chunk().await.map_err(|e| Attempt::transport(&e))? {
                    if (bytes.len() + chunk.len()) as u64 > desc.size {
                        // Longer than its descriptor: refuse without reading further.
                        return Ok(Err(size_mismatch((bytes.len() + chunk.len()) as u64)));
                    }
                    hasher.update(&chunk);
                    bytes.extend_from_slice(&chunk);
                }
                if bytes.len() as u64 != desc.size {
                    return Ok(Err(size_mismatch(bytes.len() as u64)));
                }
                let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
                if actual != desc.digest {
                    return Ok(Err(ArtifactError::DigestMismatch { part, digest: desc.digest.clone(), actual }));
                }
                Ok(Ok(bytes))
            })
            .await?
    }
}
