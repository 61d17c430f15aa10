//! The embedded store's data directory: one redb file holding the current keys, the event log
//! since the last compaction and the revision counters, every record checksummed.
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
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};

use super::Entry;
use crate::{Error, Event, EventKind, KeyValue, Result, Revision};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

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
    pub entries: Vec<(Arc<str>, Entry)>,
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
        let (revision, compacted) = match txn.open_table(META) {
            Ok(meta) => {
                let get = |k| -> Result<u64> {
                    Ok(meta
                        .get(k)
                        .map_err(|e| self.corrupt(e))?
                        .map(|v| v.value())
                        .unwrap_or(1))
                };
                (get(META_REVISION)?, get(META_COMPACTED)?)
            }
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(self.empty()),
            Err(e) => return Err(self.corrupt(e)),
        };
        let mut entries = Vec::new();
        let kv = txn.open_table(KV).map_err(|e| self.corrupt(e))?;
        for row in kv.iter().map_err(|e| self.corrupt(e))? {
            let (k, v) = row.map_err(|e| self.corrupt(e))?;
            let key = k.value();
            let entry = decode_entry(v.value())
                .ok_or_else(|| self.corrupt(format!("record of key {key} fails its checksum")))?;
            if entry.mod_revision > revision {
                return Err(self.corrupt(format!("key {key} is newer than the store")));
            }
            entries.push((Arc::from(key), entry));
        }
        let mut events = VecDeque::new();
        let log = txn.open_table(LOG).map_err(|e| self.corrupt(e))?;
        for row in log.iter().map_err(|e| self.corrupt(e))? {
            let (r, v) = row.map_err(|e| self.corrupt(e))?;
            let event = decode_event(r.value(), v.value()).ok_or_else(|| {
                self.corrupt(format!("log record {} fails its checksum", r.value()))
            })?;
            events.push_back(event);
        }
        Ok(Loaded {
            revision,
            compacted,
            entries,
            events,
        })
    }

    fn empty(&self) -> Loaded {
        Loaded {
            revision: 1,
            compacted: 1,
            entries: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Makes a batch durable: the changed keys, their log records, the new revision, and the
    /// log trimmed to `compacted` when that moved.
    pub(crate) fn commit(
        &self,
        changes: &[Change],
        revision: Revision,
        compacted: Option<Revision>,
    ) -> Result<()> {
        let write = || -> std::result::Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
            {
                let mut kv = txn.open_table(KV)?;
                let mut log = txn.open_table(LOG)?;
                let mut meta = txn.open_table(META)?;
                let mut buf = Vec::new();
                for c in changes {
                    let e = &c.event;
                    match e.kind {
                        EventKind::Deleted => {
                            kv.remove(&*e.kv.key)?;
                        }
                        _ => {
                            encode_entry(&mut buf, &e.kv, c.expires_at);
                            kv.insert(&*e.kv.key, buf.as_slice())?;
                        }
                    }
                    encode_event(&mut buf, e);
                    log.insert(e.revision(), buf.as_slice())?;
                }
                meta.insert(META_REVISION, revision)?;
                if let Some(start) = compacted {
                    log.retain_in(..start, |_, _| false)?;
                    meta.insert(META_COMPACTED, start)?;
                }
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
        // Verify every page's checksum: a damaged file fails to open rather than being trusted.
        builder.set_check_integrity_on_open(true);
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

// Record layouts, little-endian, each led by a CRC-32 of the rest:
//   entry: crc | create u64 | mod u64 | expires_at u64 | value
//   event: crc | kind u8 | create u64 | key_len u32 | key | value_len u32 | value
//              | has_prev u8 [| prev_create u64 | prev_mod u64 | prev_value]

fn seal(buf: &mut [u8]) {
    let crc = crc32fast::hash(&buf[4..]);
    buf[..4].copy_from_slice(&crc.to_le_bytes());
}

fn unseal(record: &[u8]) -> Option<Reader<'_>> {
    let (crc, body) = record.split_at_checked(4)?;
    (crc32fast::hash(body).to_le_bytes() == crc).then_some(Reader(body))
}

fn encode_entry(buf: &mut Vec<u8>, kv: &KeyValue, expires_at: u64) {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&kv.create_revision.to_le_bytes());
    buf.extend_from_slice(&kv.mod_revision.to_le_bytes());
    buf.extend_from_slice(&expires_at.to_le_bytes());
    buf.extend_from_slice(&kv.value);
    seal(buf);
}

fn decode_entry(record: &[u8]) -> Option<Entry> {
    let mut r = unseal(record)?;
    Some(Entry {
        create_revision: r.u64()?,
        mod_revision: r.u64()?,
        expires_at: r.u64()?,
        value: Bytes::copy_from_slice(r.rest()),
    })
}

fn encode_event(buf: &mut Vec<u8>, e: &Event) {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    buf.push(match e.kind {
        EventKind::Added => 0,
        EventKind::Modified => 1,
        EventKind::Deleted => 2,
    });
    buf.extend_from_slice(&e.kv.create_revision.to_le_bytes());
    for field in [e.kv.key.as_bytes(), &e.kv.value] {
        buf.extend_from_slice(&(field.len() as u32).to_le_bytes());
        buf.extend_from_slice(field);
    }
    match &e.prev {
        None => buf.push(0),
        Some(p) => {
            buf.push(1);
            buf.extend_from_slice(&p.create_revision.to_le_bytes());
            buf.extend_from_slice(&p.mod_revision.to_le_bytes());
            buf.extend_from_slice(&p.value);
        }
    }
    seal(buf);
}

fn decode_event(revision: Revision, record: &[u8]) -> Option<Event> {
    let mut r = unseal(record)?;
    let kind = match r.u8()? {
        0 => EventKind::Added,
        1 => EventKind::Modified,
        2 => EventKind::Deleted,
        _ => return None,
    };
    let create_revision = r.u64()?;
    let key: Arc<str> = Arc::from(std::str::from_utf8(r.field()?).ok()?);
    let value = Bytes::copy_from_slice(r.field()?);
    let prev = match r.u8()? {
        0 => None,
        _ => Some(KeyValue {
            key: key.clone(),
            create_revision: r.u64()?,
            mod_revision: r.u64()?,
            value: Bytes::copy_from_slice(r.rest()),
        }),
    };
    Some(Event {
        kind,
        kv: KeyValue {
            key,
            value,
            create_revision,
            mod_revision: revision,
        },
        prev,
    })
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
