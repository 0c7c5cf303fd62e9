//! What the store knows about one image.

use serde::{Deserialize, Serialize};

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: the config digest, `sha256:…`.
    pub id: String,
    /// Tags pointing at it, `registry/repo:tag`.
    pub repo_tags: Vec<String>,
    /// Digests it was pulled by, `registry/repo@sha256:…` (the digest the
    /// tag resolved to: the index's when the image came through one).
    pub repo_digests: Vec<String>,
    /// Size: compressed layers plus config, as containerd reports it.
    pub size: u64,
    /// The config's `User`, verbatim (`1000`, `www-data`, `1000:1000`).
    pub user: Option<String>,
    /// The image config JSON, verbatim.
    pub config_json: String,
    /// Chain IDs of the layers, base first.
    pub layers: Vec<String>,
    /// When it was pulled, nanoseconds since the epoch.
    pub created_ns: i64,
}

/// The image user as CRI's `Image` carries it: a numeric user becomes
/// `uid`, a name becomes `username`; a group after `:` is dropped (as
/// containerd does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriUser {
    /// No user in the config.
    None,
    /// `Image.uid`.
    Uid(i64),
    /// `Image.username`.
    Username(String),
}

impl ImageRecord {
    /// [`CriUser`] of this image.
    pub fn cri_user(&self) -> CriUser {
        let Some(user) = self.user.as_deref() else {
            return CriUser::None;
        };
        let user = user.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return CriUser::None;
        }
        match user.parse::<i64>() {
            Ok(uid) => CriUser::Uid(uid),
            Err(_) => CriUser::Username(user.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_user_forms() {
        let mut r = ImageRecord {
            id: String::new(),
            repo_tags: vec![],
            repo_digests: vec![],
            size: 0,
            user: None,
            config_json: String::new(),
            layers: vec![],
            created_ns: 0,
        };
        assert_eq!(r.cri_user(), CriUser::None);
        for (u, want) in [
            ("1002", CriUser::Uid(1002)),
            ("1003:1004", CriUser::Uid(1003)),
            ("www-data", CriUser::Username("www-data".into())),
            ("www-data:1004", CriUser::Username("www-data".into())),
            (":1004", CriUser::None),
        ] {
            r.user = Some(u.into());
            assert_eq!(r.cri_user(), want, "{u}");
        }
    }
}
