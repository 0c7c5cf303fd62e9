//! The store's tables in the daemon's redb database. Every change is one
//! durable write transaction.
//!
//! - `image_records`: image ID → JSON [`ImageRecord`]
//! - `image_names`: `repo:tag` or `repo@digest` → image ID
//! - `image_rootfs`: container ID → image ID (prepared root filesystems)

use crate::error::ImageError;
use crate::record::ImageRecord;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::HashSet;

const RECORDS: TableDefinition<&str, &str> = TableDefinition::new("image_records");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("image_names");
const ROOTFS: TableDefinition<&str, &str> = TableDefinition::new("image_rootfs");

fn e<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> ImageError {
    move |err| ImageError::Db {
        op,
        source: err.into(),
    }
}

fn decode(key: &str, json: &str) -> Result<ImageRecord, ImageError> {
    serde_json::from_str(json).map_err(|source| ImageError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn encode(rec: &ImageRecord) -> String {
    // Serializing a struct of strings and numbers cannot fail.
    serde_json::to_string(rec).unwrap_or_default()
}

/// Creates the tables if they do not exist.
pub fn init(db: &Database) -> Result<(), ImageError> {
    let tx = db.begin_write().map_err(e("begin write"))?;
    {
        tx.open_table(RECORDS).map_err(e("open image_records"))?;
        tx.open_table(NAMES).map_err(e("open image_names"))?;
        tx.open_table(ROOTFS).map_err(e("open image_rootfs"))?;
    }
    tx.commit().map_err(e("commit"))
}

/// Every image record.
pub fn list(db: &Database) -> Result<Vec<ImageRecord>, ImageError> {
    let tx = db.begin_read().map_err(e("begin read"))?;
    let t = tx.open_table(RECORDS).map_err(e("open image_records"))?;
    let mut out = Vec::new();
    for item in t.iter().map_err(e("iterate image_records"))? {
        let (k, v) = item.map_err(e("read image_records"))?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// The record with ID `id`.
pub fn get(db: &Database, id: &str) -> Result<Option<ImageRecord>, ImageError> {
    let tx = db.begin_read().map_err(e("begin read"))?;
    let t = tx.open_table(RECORDS).map_err(e("open image_records"))?;
    match t.get(id).map_err(e("read image_records"))? {
        Some(v) => Ok(Some(decode(id, v.value())?)),
        None => Ok(None),
    }
}

/// The image ID a name points to.
pub fn lookup_name(db: &Database, name: &str) -> Result<Option<String>, ImageError> {
    let tx = db.begin_read().map_err(e("begin read"))?;
    let t = tx.open_table(NAMES).map_err(e("open image_names"))?;
    Ok(t.get(name)
        .map_err(e("read image_names"))?
        .map(|v| v.value().to_owned()))
}

/// Image IDs starting with `prefix` (a `sha256:` prefix included).
pub fn ids_with_prefix(db: &Database, prefix: &str) -> Result<Vec<String>, ImageError> {
    let tx = db.begin_read().map_err(e("begin read"))?;
    let t = tx.open_table(RECORDS).map_err(e("open image_records"))?;
    let mut out = Vec::new();
    for item in t.range(prefix..).map_err(e("iterate image_records"))? {
        let (k, _) = item.map_err(e("read image_records"))?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(k.value().to_owned());
    }
    Ok(out)
}

/// Stores `new` (merging names into an existing record of the same ID) and
/// points every name in `new.repo_tags` and `new.repo_digests` at it; a
/// name taken from another image is removed from that image's record.
/// Returns the record as stored.
pub fn commit_image(db: &Database, new: &ImageRecord) -> Result<ImageRecord, ImageError> {
    let tx = db.begin_write().map_err(e("begin write"))?;
    let stored = {
        let mut records = tx.open_table(RECORDS).map_err(e("open image_records"))?;
        let mut names = tx.open_table(NAMES).map_err(e("open image_names"))?;
        let mut rec = match records
            .get(new.id.as_str())
            .map_err(e("read image_records"))?
        {
            Some(v) => decode(&new.id, v.value())?,
            None => new.clone(),
        };
        for name in new.repo_tags.iter().chain(&new.repo_digests) {
            let prev = names
                .insert(name.as_str(), new.id.as_str())
                .map_err(e("write image_names"))?
                .map(|v| v.value().to_owned());
            if let Some(prev) = prev.filter(|p| *p != new.id) {
                let old = records
                    .get(prev.as_str())
                    .map_err(e("read image_records"))?
                    .map(|v| decode(&prev, v.value()))
                    .transpose()?;
                if let Some(mut old) = old {
                    old.repo_tags.retain(|t| t != name);
                    old.repo_digests.retain(|t| t != name);
                    tracing::info!(name = %name, from = %prev, to = %new.id, "name moved to another image");
                    records
                        .insert(prev.as_str(), encode(&old).as_str())
                        .map_err(e("write image_records"))?;
                }
            }
        }
        for t in &new.repo_tags {
            if !rec.repo_tags.contains(t) {
                rec.repo_tags.push(t.clone());
            }
        }
        for d in &new.repo_digests {
            if !rec.repo_digests.contains(d) {
                rec.repo_digests.push(d.clone());
            }
        }
        records
            .insert(rec.id.as_str(), encode(&rec).as_str())
            .map_err(e("write image_records"))?;
        rec
    };
    tx.commit().map_err(e("commit"))?;
    Ok(stored)
}

/// Removes the image `id` and every name pointing at it, unless a prepared
/// root filesystem uses it. Returns the removed record.
pub fn remove_image(db: &Database, id: &str) -> Result<Option<ImageRecord>, ImageError> {
    let tx = db.begin_write().map_err(e("begin write"))?;
    let removed = {
        let rootfs = tx.open_table(ROOTFS).map_err(e("open image_rootfs"))?;
        let mut users = Vec::new();
        for item in rootfs.iter().map_err(e("iterate image_rootfs"))? {
            let (c, img) = item.map_err(e("read image_rootfs"))?;
            if img.value() == id {
                users.push(c.value().to_owned());
            }
        }
        if !users.is_empty() {
            return Err(ImageError::InUse {
                image: id.to_owned(),
                containers: users,
            });
        }
        let mut records = tx.open_table(RECORDS).map_err(e("open image_records"))?;
        let mut names = tx.open_table(NAMES).map_err(e("open image_names"))?;
        let rec = records
            .remove(id)
            .map_err(e("write image_records"))?
            .map(|v| decode(id, v.value()))
            .transpose()?;
        names
            .retain(|_, v| v != id)
            .map_err(e("write image_names"))?;
        rec
    };
    tx.commit().map_err(e("commit"))?;
    Ok(removed)
}

/// Removes records (and their names) for which `keep` is false, in one
/// transaction; returns the removed IDs.
pub fn retain_images(
    db: &Database,
    mut keep: impl FnMut(&ImageRecord) -> bool,
) -> Result<Vec<String>, ImageError> {
    let all = list(db)?;
    let drop: HashSet<String> = all
        .iter()
        .filter(|r| !keep(r))
        .map(|r| r.id.clone())
        .collect();
    let tx = db.begin_write().map_err(e("begin write"))?;
    {
        let mut records = tx.open_table(RECORDS).map_err(e("open image_records"))?;
        let mut names = tx.open_table(NAMES).map_err(e("open image_names"))?;
        for id in &drop {
            records
                .remove(id.as_str())
                .map_err(e("write image_records"))?;
        }
        let mut ids = HashSet::new();
        for item in records.iter().map_err(e("iterate image_records"))? {
            let (k, _) = item.map_err(e("read image_records"))?;
            ids.insert(k.value().to_owned());
        }
        // Also drops names left pointing at nothing.
        names
            .retain(|_, v| ids.contains(v))
            .map_err(e("write image_names"))?;
    }
    tx.commit().map_err(e("commit"))?;
    Ok(drop.into_iter().collect())
}

/// Records that `container` has a root filesystem from `image`.
pub fn put_rootfs(db: &Database, container: &str, image: &str) -> Result<(), ImageError> {
    let tx = db.begin_write().map_err(e("begin write"))?;
    {
        let mut t = tx.open_table(ROOTFS).map_err(e("open image_rootfs"))?;
        t.insert(container, image)
            .map_err(e("write image_rootfs"))?;
    }
    tx.commit().map_err(e("commit"))
}

/// Forgets the root filesystem of `container`.
pub fn delete_rootfs(db: &Database, container: &str) -> Result<(), ImageError> {
    let tx = db.begin_write().map_err(e("begin write"))?;
    {
        let mut t = tx.open_table(ROOTFS).map_err(e("open image_rootfs"))?;
        t.remove(container).map_err(e("write image_rootfs"))?;
    }
    tx.commit().map_err(e("commit"))
}

/// The image of a prepared root filesystem.
pub fn rootfs_image(db: &Database, container: &str) -> Result<Option<String>, ImageError> {
    let tx = db.begin_read().map_err(e("begin read"))?;
    let t = tx.open_table(ROOTFS).map_err(e("open image_rootfs"))?;
    Ok(t.get(container)
        .map_err(e("read image_rootfs"))?
        .map(|v| v.value().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.to_owned(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![format!("r@{id}")],
            size: 1,
            user: None,
            config_json: "{}".into(),
            layers: vec![],
            created_ns: 0,
        }
    }

    fn mem_db() -> Database {
        Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("in-memory db")
    }

    #[test]
    fn tags_merge_and_move() {
        let db = mem_db();
        init(&db).expect("init");
        commit_image(&db, &rec("sha256:a", &["r:1"])).expect("commit");
        let a = commit_image(&db, &rec("sha256:a", &["r:2"])).expect("commit");
        assert_eq!(a.repo_tags, ["r:1", "r:2"]);
        // r:2 moves to b.
        commit_image(&db, &rec("sha256:b", &["r:2"])).expect("commit");
        assert_eq!(
            get(&db, "sha256:a").expect("get").expect("a").repo_tags,
            ["r:1"]
        );
        assert_eq!(
            lookup_name(&db, "r:2").expect("lookup").as_deref(),
            Some("sha256:b")
        );
        assert_eq!(ids_with_prefix(&db, "sha256:").expect("prefix").len(), 2);
        put_rootfs(&db, "c1", "sha256:a").expect("rootfs");
        assert!(matches!(
            remove_image(&db, "sha256:a"),
            Err(ImageError::InUse { .. })
        ));
        delete_rootfs(&db, "c1").expect("rootfs");
        assert!(remove_image(&db, "sha256:a").expect("remove").is_some());
        assert_eq!(lookup_name(&db, "r:1").expect("lookup"), None);
        assert_eq!(lookup_name(&db, "r@sha256:a").expect("lookup"), None);
        assert!(remove_image(&db, "sha256:a").expect("remove").is_none());
        let dropped = retain_images(&db, |_| false).expect("retain");
        assert_eq!(dropped, ["sha256:b"]);
        assert_eq!(lookup_name(&db, "r:2").expect("lookup"), None);
    }
}
