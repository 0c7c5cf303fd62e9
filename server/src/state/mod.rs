//! The daemon's durable state: one redb database under the root dir. Every
//! change the API reports as done is committed (fsynced) before the reply.
//! Records are JSON; CRI configs are kept as their protobuf encoding.

mod containers;
mod pods;

pub use containers::{ContainerRecord, ContainerState};
pub use pods::{PodNamespaces, PodRecord, PodResources, PodState};

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening or creating the database.
    #[error("cannot open state database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// The cause.
        #[source]
        source: redb::DatabaseError,
    },
    /// A read or write transaction failed.
    #[error("state database: {0}")]
    Db(String),
    /// A record could not be encoded or decoded.
    #[error("state record {key}: {source}")]
    Record {
        /// The record's key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// The database, shared by the daemon's components.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) `<root>/krio.redb`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let path = root.join("krio.redb");
        let db = redb::Database::create(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let store = Self { db: Arc::new(db) };
        // Create the tables so reads never race their creation.
        let txn = store.db.begin_write().map_err(db_err)?;
        txn.open_table(PODS).map_err(db_err)?;
        txn.open_table(CONTAINERS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(store)
    }

    /// The underlying database, for components that keep their own tables.
    pub fn database(&self) -> Arc<redb::Database> {
        self.db.clone()
    }

    /// Writes a pod record (blocking: commits durably).
    pub fn put_pod(&self, pod: &PodRecord) -> Result<(), StoreError> {
        self.put(PODS, &pod.id, pod)
    }

    /// Deletes a pod record; a missing one is fine.
    pub fn delete_pod(&self, id: &str) -> Result<(), StoreError> {
        self.delete(PODS, id)
    }

    /// Every pod record.
    pub fn pods(&self) -> Result<Vec<PodRecord>, StoreError> {
        self.all(PODS)
    }

    /// Writes a container record (blocking: commits durably).
    pub fn put_container(&self, container: &ContainerRecord) -> Result<(), StoreError> {
        self.put(CONTAINERS, &container.id, container)
    }

    /// Deletes a container record; a missing one is fine.
    pub fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        self.delete(CONTAINERS, id)
    }

    /// Every container record.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        self.all(CONTAINERS)
    }

    fn put<T: serde::Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Record {
            key: key.to_owned(),
            source,
        })?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(table).map_err(db_err)?;
            table.insert(key, bytes.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(table).map_err(db_err)?;
            table.remove(key).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    fn all<T: serde::de::DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let record =
                serde_json::from_slice(value.value()).map_err(|source| StoreError::Record {
                    key: key.value().to_owned(),
                    source,
                })?;
            out.push(record);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = PodRecord::for_test("abc");
        {
            let store = Store::open(dir.path()).expect("open");
            store.put_pod(&pod).expect("put");
            assert_eq!(store.pods().expect("list"), vec![pod.clone()]);
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.pods().expect("list"), vec![pod]);
        store.delete_pod("abc").expect("delete");
        store.delete_pod("abc").expect("delete again");
        assert!(store.pods().expect("list").is_empty());
    }
}
