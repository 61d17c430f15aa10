//! The embedded store's data directory: one redb file holding one checksummed record per
//! revision (as etcd's backend does), and the revision counters.
//!
//! Each write appends a single record under its revision, so writes land at the right edge of
//! one B-tree. The current state and the watch history are rebuilt from the records when the
//! store opens. Compaction removes the records nothing needs any more: every version that a
//! later version at or below the compaction point supersedes, and every deletion below it.
//! What remains below the compaction point is exactly the state at that point.
//!
//! Whole batches commit in one fsync'd transaction, so a write is acknowledged only once it is
//! on disk, and a crash leaves the file at the last acknowledged batch.

use std::collections::VecDeque;
use std::fs;
use std::io::ErrorKind;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use imbl::OrdMap;
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};

use super::Entry;
use crate::{Error, Event, EventKind, Result, Revision};

const REVISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
/// How many records the table holds: checked on open, so that a damaged tree that would
/// silently yield fewer records is caught.
const META_RECORDS: &str = "records";

const DATA_FILE: &str = "store.redb";
/// Written once the data file exists: from then on a missing or empty data file is an error,
/// never a silent fresh start.
const MARKER_FILE: &str = "FORMAT";
const MARKER: &str = "fellowship-store 1\n";

/// redb's page cache: every read is served from memory, so a small cache is enough.
const CACHE_BYTES: usize = 16 << 20;

/// One key's change in a batch, with the expiry the key's record keeps.
pub(crate) struct Change {
    pub event: Event,
    pub expires_at: u64,
}

/// What the data directory held when opened.
pub(crate) struct Loaded {
    pub revision: Revision,
    pub compacted: Revision,
    pub map: OrdMap<Arc<str>, Entry>,
    pub events: VecDeque<Event>,
}

pub(crate) struct Disk {
    db: Database,
    path: PathBuf,
}

impl Disk {
    pub(crate) fn open(dir: &Path) -> Result<(Disk, Loaded)> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let path = dir.join(DATA_FILE);
        let marker = dir.join(MARKER_FILE);
        let file_len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if marker.exists() && file_len == 0 {
            return Err(Error::Corrupt {
                path,
                detail: "the data file is missing or empty, but this data directory held a store: \
                         refusing to start empty (restore the file or remove the directory)"
                    .into(),
            });
        }
        let db = open_database(&path, file_len > 0)?;
        let disk = Disk { db, path };
        let loaded = catch_unwind(AssertUnwindSafe(|| disk.load()))
            .unwrap_or_else(|panic| Err(disk.corrupt(panic_message(&panic))))?;
        if !marker.exists() {
            write_synced(&marker, MARKER).map_err(|e| io_error(&marker, e))?;
        }
        Ok((disk, loaded))
    }

    fn load(&self) -> Result<Loaded> {
        let txn = self.db.begin_read().map_err(|e| self.corrupt(e))?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(self.empty()),
            Err(e) => return Err(self.corrupt(e)),
        };
        let get = |k| -> Result<Option<u64>> {
            Ok(meta.get(k).map_err(|e| self.corrupt(e))?.map(|v| v.value()))
        };
        let required = |k| get(k)?.ok_or_else(|| self.corrupt(format!("no {k} counter")));
        let (revision, records) = (required(META_REVISION)?, required(META_RECORDS)?);
        // Absent until the first compaction.
        let compacted = get(META_COMPACTED)?.unwrap_or(1);
        let table = txn.open_table(REVISIONS).map_err(|e| self.corrupt(e))?;
        let mut map: OrdMap<Arc<str>, Entry> = OrdMap::new();
        let mut events = VecDeque::new();
        let mut seen = 0;
        for row in table.iter().map_err(|e| self.corrupt(e))? {
            let (r, v) = row.map_err(|e| self.corrupt(e))?;
            let rev = r.value();
            let (kind, key, entry) = decode(rev, v.value())
                .ok_or_else(|| self.corrupt(format!("record {rev} fails its checksum")))?;
            if rev > revision {
                return Err(self.corrupt(format!("record {rev} is newer than the store")));
            }
            seen += 1;
            let prev = map.get_key_value(&key).map(|(k, e)| e.kv(k));
            let kv = entry.kv(&key);
            match kind {
                EventKind::Deleted => map.remove(&key),
                _ => map.insert(key, entry),
            };
            if rev >= compacted {
                events.push_back(Event { kind, kv, prev });
            }
        }
        if seen != records {
            return Err(self.corrupt(format!("{seen} records readable, {records} written")));
        }
        Ok(Loaded {
            revision,
            compacted,
            map,
            events,
        })
    }

    fn empty(&self) -> Loaded {
        Loaded {
            revision: 1,
            compacted: 1,
            map: OrdMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Makes a batch durable: one record per change, the new revision, and, when the history
    /// start moves, the removal of the records `obsolete` names.
    pub(crate) fn commit(
        &self,
        changes: &[Change],
        revision: Revision,
        compaction: Option<(Revision, &[Revision])>,
    ) -> Result<()> {
        let write = || -> std::result::Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            {
                let mut table = txn.open_table(REVISIONS)?;
                let mut meta = txn.open_table(META)?;
                let mut records = meta.get(META_RECORDS)?.map_or(0, |v| v.value());
                let mut buf = Vec::new();
                for c in changes {
                    encode(&mut buf, &c.event, c.expires_at);
                    if table.insert(c.event.revision(), buf.as_slice())?.is_none() {
                        records += 1;
                    }
                }
                if let Some((start, obsolete)) = compaction {
                    for rev in obsolete {
                        if table.remove(rev)?.is_some() {
                            records -= 1;
                        }
                    }
                    meta.insert(META_COMPACTED, start)?;
                }
                meta.insert(META_REVISION, revision)?;
                meta.insert(META_RECORDS, records)?;
            }
            txn.commit()?;
            Ok(())
        };
        write()
            .map_err(|e| Error::Unavailable(format!("{}: write failed: {e}", self.path.display())))
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            detail: format!("corrupt data file: {detail}"),
        }
    }
}

fn open_database(path: &Path, exists: bool) -> Result<Database> {
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!("corrupt data file: {detail}"),
    };
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        // No redb page check on open: loading reads every record and verifies its checksum
        // and the record count, which catches what it would, at half the start-up cost.
        if exists {
            builder.open(path)
        } else {
            builder.create(path)
        }
    }))
    .map_err(|panic| corrupt(panic_message(&panic)))?;
    opened.map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => Error::Locked {
            path: path.to_path_buf(),
        },
        DatabaseError::Storage(StorageError::Io(io))
            if !matches!(io.kind(), ErrorKind::UnexpectedEof | ErrorKind::InvalidData) =>
        {
            io_error(path, io)
        }
        other => corrupt(other.to_string()),
    })
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{}: {e}", path.display()))
}

fn write_synced(path: &Path, contents: &str) -> std::io::Result<()> {
    let f = fs::File::create(path)?;
    std::io::Write::write_all(&mut &f, contents.as_bytes())?;
    f.sync_all()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unreadable".into())
}

// A record, little-endian: crc32 of the rest | kind u8 | create_revision u64 |
// expires_at u64 | key_len u32 | key | value. A deletion's value is empty.

fn encode(buf: &mut Vec<u8>, e: &Event, expires_at: u64) {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    buf.push(match e.kind {
        EventKind::Added => 0,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    });
    buf.extend_from_slice(&e.kv.create_revision.to_le_bytes());
    buf.extend_from_slice(&expires_at.to_le_bytes());
    buf.extend_from_slice(&(e.kv.key.len() as u32).to_le_bytes());
    buf.extend_from_slice(e.kv.key.as_bytes());
    buf.extend_from_slice(&e.kv.value);
    let crc = crc32fast::hash(&buf[4..]);
    buf[..4].copy_from_slice(&crc.to_le_bytes());
}

fn decode(revision: Revision, record: &[u8]) -> Option<(EventKind, Arc<str>, Entry)> {
    let (crc, body) = record.split_at_checked(4)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let mut r = Reader(body);
    let kind = match r.u8()? {
        0 => EventKind::Added,
        1 => EventKind::Modified,
        2 => EventKind::Deleted,
        _ => return None,
    };
    let create_revision = r.u64()?;
    let expires_at = r.u64()?;
    let key = Arc::from(std::str::from_utf8(r.field()?).ok()?);
    let entry = Entry {
        value: Bytes::copy_from_slice(r.rest()),
        create_revision,
        mod_revision: revision,
        expires_at,
    };
    Some((kind, key, entry))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?);
        self.take(len as usize)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}
