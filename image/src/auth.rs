//! Registry credentials: from the pull request, else from an auth file
//! (containers `auth.json` / docker `config.json`, `auths` map with
//! `auth` = base64 `user:pass`), else anonymous.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An `auth` field is not base64 of `user:password`.
    #[error("credentials for {server:?}: auth is not base64 of user:password")]
    BadAuthField {
        /// The registry the credentials are for.
        server: String,
    },
    /// The auth file exists but cannot be read.
    #[error("reading auth file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The auth file is not JSON of the expected shape.
    #[error("parsing auth file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Credentials as the CRI `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RegistryAuth {
    /// User name for basic auth.
    pub username: String,
    /// Password for basic auth.
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// The registry these credentials are for (informational).
    pub server_address: String,
    /// An OAuth2 refresh/identity token; sent as the basic-auth password
    /// (user `<token>` unless a username is given), which token servers
    /// such as ACR and Harbor accept.
    pub identity_token: String,
    /// A bearer token sent as is.
    pub registry_token: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl RegistryAuth {
    /// True when no credential field is set.
    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.auth.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }

    /// The oci-client form of these credentials.
    pub(crate) fn to_client(&self) -> Result<oci_client::secrets::RegistryAuth, AuthError> {
        use oci_client::secrets::RegistryAuth as C;
        if !self.registry_token.is_empty() {
            return Ok(C::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            let user = if self.username.is_empty() {
                "<token>".to_owned()
            } else {
                self.username.clone()
            };
            return Ok(C::Basic(user, self.identity_token.clone()));
        }
        if !self.username.is_empty() {
            return Ok(C::Basic(self.username.clone(), self.password.clone()));
        }
        if !self.auth.is_empty() {
            let (u, p) = decode_auth(&self.auth).ok_or_else(|| AuthError::BadAuthField {
                server: self.server_address.clone(),
            })?;
            return Ok(C::Basic(u, p));
        }
        Ok(C::Anonymous)
    }
}

fn decode_auth(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

#[derive(Debug, Default, Deserialize)]
struct AuthFileJson {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
}

/// Looks up credentials for `host`/`repository` in the auth file at
/// `path`: the most specific key wins (`host/ns/repo` over `host/ns` over
/// `host`); keys may carry a scheme and docker's `/v1/` suffix. A missing
/// file has no credentials.
pub fn lookup_auth_file(
    path: &Path,
    host: &str,
    repository: &str,
) -> Result<Option<RegistryAuth>, AuthError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let file: AuthFileJson = serde_json::from_slice(&text).map_err(|source| AuthError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let host = normalize_host(host);
    let full = format!("{host}/{repository}");
    let mut best: Option<(usize, &AuthEntry)> = None;
    for (key, entry) in &file.auths {
        let key = normalize_key(key);
        let matches = full == key || full.starts_with(&format!("{key}/"));
        if matches && best.is_none_or(|(l, _)| key.len() > l) {
            best = Some((key.len(), entry));
        }
    }
    Ok(best.map(|(_, e)| RegistryAuth {
        username: e.username.clone(),
        password: e.password.clone(),
        auth: e.auth.clone(),
        server_address: host.clone(),
        identity_token: e.identity_token.clone(),
        registry_token: String::new(),
    }))
}

fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k.split_once('/') {
        Some((h, rest)) => format!("{}/{rest}", normalize_host(h)),
        None => normalize_host(k),
    }
}

/// True when the hosts `a` and `b` name one registry (Docker Hub's
/// aliases are one registry).
pub(crate) fn same_registry(a: &str, b: &str) -> bool {
    normalize_host(a) == normalize_host(b)
}

fn normalize_host(h: &str) -> String {
    match h {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_auth_forms() {
        use oci_client::secrets::RegistryAuth as C;
        let a = RegistryAuth {
            auth: "dXNlcjpwYXNz".into(),
            ..Default::default()
        };
        assert!(matches!(a.to_client(), Ok(C::Basic(u, p)) if u == "user" && p == "pass"));
        let t = RegistryAuth {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert!(matches!(t.to_client(), Ok(C::Bearer(x)) if x == "tok"));
        assert!(matches!(
            RegistryAuth::default().to_client(),
            Ok(C::Anonymous)
        ));
        let bad = RegistryAuth {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(bad.to_client().is_err());
        assert!(!format!("{t:?}").contains("tok"));
    }

    #[test]
    fn auth_file_most_specific_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("auth.json");
        assert!(
            lookup_auth_file(&path, "a.io", "x")
                .expect("missing ok")
                .is_none()
        );
        std::fs::write(
            &path,
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"aHViOnB3"},
                "a.io":{"auth":"aG9zdDpwdw=="},
                "a.io/team":{"auth":"dGVhbTpwdw=="}}}"#,
        )
        .expect("write");
        let get = |h: &str, r: &str| {
            lookup_auth_file(&path, h, r)
                .expect("parses")
                .map(|a| decode_auth(&a.auth).expect("b64").0)
        };
        assert_eq!(get("docker.io", "library/busybox").as_deref(), Some("hub"));
        assert_eq!(get("a.io", "team/x").as_deref(), Some("team"));
        assert_eq!(get("a.io", "teams/x").as_deref(), Some("host"));
        assert_eq!(get("b.io", "x"), None);
    }
}
