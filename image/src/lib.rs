//! krio's image side: references, registries configuration, pulling, the
//! content store, layer unpacking and container root-filesystem snapshots.
//!
//! The daemon opens one redb database and passes it to [`ImageStore::open`]
//! with a directory for blobs and layers ([`layout`]); the store's tables
//! are prefixed `image_` (`image_records`, `image_names`,
//! `image_rootfs`). Every error has an [`ErrorKind`] that picks the gRPC
//! status code.
//!
//! - [`reference`](mod@reference): normalisation like the kubelet and containerd.
//! - [`registries`]: containers-registries.conf v2 (mirrors, insecure,
//!   blocked, search registries), re-read when the file changes.
//! - [`auth`]: request credentials, auth file, anonymous.
//! - [`certs`]: per-registry CAs from a containers `certs.d` directory.
//! - [`pull`]: endpoints in order, platform selection, verified blobs,
//!   parallel layers; concurrent identical pulls share one task, and
//!   concurrent pulls of images sharing a layer fetch it once.
//! - [`unpack`]: hostile-input-safe unpacking (openat2 with
//!   `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, see [`unpack::inroot`]).
//! - [`rootfs`]: overlay snapshots; long chains via short links and
//!   `lowerdir+`.
//! - repair on open: `tmp/` wiped, broken records dropped, unreferenced
//!   layers and blobs collected.
//!
//! The synchronous methods ([`ImageStore::list`], [`ImageStore::resolve`],
//! [`ImageStore::remove`], the rootfs and usage calls) do file-system and
//! database I/O: call them from `spawn_blocking` in async code.

pub mod auth;
pub mod certs;
mod db;
pub mod digest;
pub mod error;
mod fetch;
mod gc;
pub mod layout;
pub mod manifest;
mod pins;
pub mod platform;
pub mod pull;
pub mod record;
pub mod reference;
pub mod registries;
pub mod rootfs;
mod snapshot;
mod store;
pub mod unpack;
pub mod usage;

pub use auth::RegistryAuth;
pub use error::{ErrorKind, ImageError};
pub use platform::Platform;
pub use record::{CriUser, ImageRecord};
pub use rootfs::RootfsSpec;
pub use store::{DEFAULT_MAX_UNPACKED_BYTES, ImageStore, ImageStoreOptions};
pub use usage::FsUsage;
