//! krio's image side: references, registries configuration, pulling, the
//! content store, layer unpacking and container root-filesystem snapshots.
//!
//! Empty until the ImageService issue lands; the crate exists now so the
//! workspace has the layout of `design.md` from its first commit.
