//! The crate's error type and the one mapping the daemon needs: which CRI
//! status each error becomes.

use crate::auth::AuthError;
use crate::pull::PullError;
use crate::reference::ReferenceError;
use crate::registries::RegistriesError;
use crate::rootfs::RootfsError;
use std::path::PathBuf;
use std::sync::Arc;

/// What kind of failure an [`ImageError`] is, for the gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (bad reference): `InvalidArgument`.
    InvalidArgument,
    /// No such image: `NotFound`.
    NotFound,
    /// The image is in use or the store is not in a state to do it:
    /// `FailedPrecondition`.
    FailedPrecondition,
    /// A registry could not be reached or refused us: `Unavailable` /
    /// `Unknown` at the daemon's choice.
    Registry,
    /// The registry refused the credentials, or wants some:
    /// `Unauthenticated`.
    Unauthenticated,
    /// Anything else: `Internal`.
    Internal,
}

/// An error of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference cannot be parsed.
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    /// No image has this name or ID.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The image has container root filesystems prepared from it.
    #[error("image {image} is in use by containers {containers:?}")]
    InUse {
        /// The image ID.
        image: String,
        /// Containers using it.
        containers: Vec<String>,
    },
    /// The registries configuration is unusable or blocks the pull.
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    /// Credentials are unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Pulling failed.
    #[error("pulling {reference}")]
    Pull {
        /// The reference being pulled.
        reference: String,
        /// The cause.
        #[source]
        source: PullError,
    },
    /// The embedded database failed.
    #[error("image store database: {op}")]
    Db {
        /// What was attempted.
        op: &'static str,
        /// The cause.
        #[source]
        source: redb::Error,
    },
    /// A stored record is corrupt.
    #[error("image store record {key:?} is corrupt")]
    Corrupt {
        /// The record key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A file operation of the store failed.
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The image config cannot be parsed as an OCI image configuration.
    #[error("image {image}: parsing its config")]
    Config {
        /// The image ID.
        image: String,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// Preparing, mounting or removing a container root filesystem failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The failure of a pull this call shared with a concurrent identical
    /// pull.
    #[error(transparent)]
    Shared(Arc<ImageError>),
}

impl ImageError {
    /// Which status code this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidReference(_) => ErrorKind::InvalidArgument,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::InUse { .. } => ErrorKind::FailedPrecondition,
            Self::Registries(RegistriesError::Blocked { .. }) => ErrorKind::FailedPrecondition,
            Self::Auth(_) => ErrorKind::InvalidArgument,
            Self::Pull { source, .. } => source.kind(),
            Self::Rootfs(e) => e.kind(),
            Self::Shared(e) => e.kind(),
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
