//! A minimal client for pushing to a registry over the distribution v2 API
//! (plain HTTP, no auth): blobs with HEAD-then-monolithic-upload (or a
//! cross-repository mount when another repository already has the blob),
//! manifests with PUT.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use thiserror::Error;
use ureq::Agent;
use ureq::http::Response;

use crate::oci::Blob;

/// What can go wrong talking to the registry.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The request did not get a response.
    #[error("{method} {url}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// The underlying error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// Response status.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// An upload was started but the registry did not say where to send it.
    #[error("{url}: upload response has no Location header")]
    NoLocation {
        /// Request URL.
        url: String,
    },
    /// The registry stored a manifest under a different digest.
    #[error("{repo}:{reference}: registry reports digest {got}, expected {want}")]
    DigestMismatch {
        /// Repository.
        repo: String,
        /// Tag or digest pushed.
        reference: String,
        /// Digest the registry reported.
        got: String,
        /// Digest of the bytes sent.
        want: String,
    },
}

type Result<T> = std::result::Result<T, RegistryError>;

/// A registry reached at `http://ADDR`.
pub struct Registry {
    base: String,
    agent: Agent,
    /// Blob digest -> a repository known to hold it (for mounts).
    known: RefCell<HashMap<String, String>>,
}

impl Registry {
    /// A client for the registry at `addr` (`host:port`, or a full
    /// `http://…` URL).
    pub fn new(addr: &str) -> Self {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self {
            base,
            agent,
            known: RefCell::new(HashMap::new()),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    fn check(
        method: &'static str,
        url: &str,
        res: std::result::Result<Response<ureq::Body>, ureq::Error>,
        ok: &[u16],
    ) -> Result<Response<ureq::Body>> {
        let mut res = res.map_err(|source| RegistryError::Transport {
            method,
            url: url.to_owned(),
            source: Box::new(source),
        })?;
        let status = res.status().as_u16();
        if ok.contains(&status) {
            return Ok(res);
        }
        let mut body = res.body_mut().read_to_string().unwrap_or_default();
        body.truncate(500);
        Err(RegistryError::Status {
            method,
            url: url.to_owned(),
            status,
            body,
        })
    }

    fn header(res: &Response<ureq::Body>, name: &str) -> Option<String> {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Checks that the registry speaks the v2 API (`GET /v2/` → 200).
    pub fn ping(&self) -> Result<()> {
        let url = self.url("/v2/");
        Self::check("GET", &url, self.agent.get(&url).call(), &[200])?;
        Ok(())
    }

    /// Makes sure `repo` has `blob`. Returns true when it had to upload it.
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{}", blob.digest));
        let res = Self::check("HEAD", &url, self.agent.head(&url).call(), &[200, 404])?;
        if res.status().as_u16() == 200 {
            self.remember(repo, blob);
            return Ok(false);
        }

        // Mount from a repository known to have it, else start an upload.
        let from = self.known.borrow().get(&blob.digest).cloned();
        let start = match from {
            Some(from) if from != repo => self.url(&format!(
                "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
                blob.digest
            )),
            _ => self.url(&format!("/v2/{repo}/blobs/uploads/")),
        };
        let res = Self::check(
            "POST",
            &start,
            self.agent.post(&start).send_empty(),
            &[201, 202],
        )?;
        if res.status().as_u16() == 201 {
            self.remember(repo, blob);
            return Ok(false);
        }
        let location = Self::header(&res, "location")
            .ok_or_else(|| RegistryError::NoLocation { url: start.clone() })?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self.url(&format!("{location}{sep}digest={}", blob.digest));
        Self::check(
            "PUT",
            &put,
            self.agent
                .put(&put)
                .header("Content-Type", "application/octet-stream")
                .send(&blob.data[..]),
            &[201],
        )?;
        self.remember(repo, blob);
        Ok(true)
    }

    fn remember(&self, repo: &str, blob: &Blob) {
        self.known
            .borrow_mut()
            .entry(blob.digest.clone())
            .or_insert_with(|| repo.to_owned());
    }

    /// Stores `manifest` (a manifest or index) in `repo` under `reference`
    /// (a tag or its digest) and checks the digest the registry reports.
    pub fn push_manifest(&self, repo: &str, reference: &str, manifest: &Blob) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let res = Self::check(
            "PUT",
            &url,
            self.agent
                .put(&url)
                .header("Content-Type", manifest.media_type)
                .send(&manifest.data[..]),
            &[201],
        )?;
        match Self::header(&res, "docker-content-digest") {
            Some(got) if got != manifest.digest => Err(RegistryError::DigestMismatch {
                repo: repo.to_owned(),
                reference: reference.to_owned(),
                got,
                want: manifest.digest.clone(),
            }),
            _ => Ok(()),
        }
    }
}
