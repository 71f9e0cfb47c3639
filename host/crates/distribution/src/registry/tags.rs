//! Listing a repository's tags (`GET /v2/<name>/tags/list`), page by page, for watches.

use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::RegistrySource;
use super::error::{RemoteError, RemoteFailure};
use super::pull::read_capped;
use crate::artifact::{ArtifactError, BlobSource as _};

/// Tags asked for per page of `GET /v2/<name>/tags/list` (`?n=`).
pub const TAGS_PAGE: usize = 1000;
/// The most bytes one page of a tag list may have: a page of `TAGS_PAGE` tags of the
/// longest kind (128 bytes, quoted) is about 130 KiB; a registry that ignores `n` may
/// send more in one page, up to this.
pub const TAGS_PAGE_CAP: u64 = 1024 * 1024;

/// A repository's tags, as a watch sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagList {
    /// Tags that match the OCI tag grammar, in the registry's order.
    pub tags: Vec<String>,
    /// Entries that are not tags by the OCI grammar (dropped, never shown).
    pub invalid: usize,
    /// More tags than asked for exist (only the first `max_tags` are here).
    pub truncated: bool,
    /// The registry does not know the repository (404): nothing pushed yet.
    pub missing: bool,
}

/// Why a repository's tags could not be listed, in Kiosk's words.
#[derive(Debug, thiserror::Error)]
pub enum TagsError {
    #[error("{0}")]
    Remote(RemoteError),
    #[error("{source_name}: a page of the tag list is larger than {cap} bytes")]
    TooLarge { source_name: String, cap: u64 },
    #[error("{source_name}: the tag list is not the JSON the distribution API specifies")]
    Malformed { source_name: String },
    #[error("{source_name}: the repository is not a valid OCI repository name")]
    BadRepository { source_name: String },
}

impl TagsError {
    /// Worth another attempt later (the registry was unreachable or answered 429/5xx).
    pub fn transient(&self) -> bool {
        matches!(self, Self::Remote(r) if r.failure.transient())
    }

    /// The failure, if the registry was reached (or refused by the operator's rules).
    pub fn remote(&self) -> Option<&RemoteFailure> {
        match self {
            Self::Remote(r) => Some(&r.failure),
            _ => None,
        }
    }
}

impl RegistrySource<'_> {
    /// Lists the repository's tags (`GET /v2/<name>/tags/list`, pages of `TAGS_PAGE`
    /// continued with `last=`; the registry's `Link` header is only a signal that more
    /// exist, its URL is never followed), at most `max_tags`, each page at most
    /// `TAGS_PAGE_CAP` bytes. Entries outside the OCI tag grammar are counted and dropped.
    /// A repository the registry does not know is an empty, `missing` list.
    pub async fn list_tags(&self, max_tags: usize) -> Result<TagList, TagsError> {
        if self.refuse_names().is_err() {
            return Err(TagsError::BadRepository { source_name: self.name() });
        }
        let as_tags_error = |e: ArtifactError| match e {
            ArtifactError::Remote(r) => TagsError::Remote(r),
            _ => TagsError::Malformed { source_name: self.name() },
        };
        let auth = self.authorization().await.map_err(as_tags_error)?;
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut list = TagList::default();
        let mut last: Option<String> = None;
        // Every page but the last holds at least one new tag, so this bounds the loop.
        let max_pages = max_tags / TAGS_PAGE + 2;
        for _ in 0..max_pages {
            let mut url = Url::parse(&format!("{}/v2/{}/tags/list", self.registry.base, self.repository))
                .map_err(|_| TagsError::BadRepository { source_name: self.name() })?;
            url.query_pairs_mut().append_pair("n", &TAGS_PAGE.to_string());
            if let Some(last) = &last {
                url.query_pairs_mut().append_pair("last", last);
            }
            let what = "list tags";
            let answer = self
                .registry
                .pull(&self.name(), what, || async {
                    let resp = Self::send(self.get(url.clone(), &auth)).await?;
                    if resp.status() == StatusCode::NOT_FOUND {
                        return Ok(None);
                    }
                    let resp = Self::success(resp, RemoteFailure::Status).await?;
                    let more = resp
                        .headers()
                        .get_all(reqwest::header::LINK)
                        .iter()
                        .any(|v| v.to_str().is_ok_and(|v| v.contains("rel=\"next\"")));
                    Ok(Some((read_capped(resp, TAGS_PAGE_CAP).await?, more)))
                })
                .await
                .map_err(as_tags_error)?;
            let Some((body, more)) = answer else {
                list.missing = last.is_none();
                return Ok(list);
            };
            let body = body.ok_or_else(|| TagsError::TooLarge { source_name: self.name(), cap: TAGS_PAGE_CAP })?;
            let page: Page =
                serde_json::from_slice(&body).map_err(|_| TagsError::Malformed { source_name: self.name() })?;
            let tags = page.tags.unwrap_or_default();
            let page_last = tags.last().cloned();
            let mut new = 0;
            for tag in tags {
                if !crate::artifact::valid_tag(&tag) {
                    list.invalid += 1;
                    continue;
                }
                if list.tags.len() >= max_tags {
                    list.truncated = true;
                    return Ok(list);
                }
                list.tags.push(tag);
                new += 1;
            }
            match page_last {
                Some(page_last) if more && new > 0 && last.as_ref() != Some(&page_last) => last = Some(page_last),
                _ => return Ok(list),
            }
        }
        list.truncated = true;
        Ok(list)
    }
}
