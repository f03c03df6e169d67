//! The journal of object writes in flight on this node: a small file per write in
//! `data_dir/journal/`, made before an object is written and removed once the write is settled
//! (its index rows committed, or the object removed again). What a crash or a cancelled
//! reception leaves there is all start-up needs to look at: the objects that may lack index rows.
//! It replaces listing the whole object store at every start, which a bucket of millions of
//! objects shared by several nodes cannot afford (a full pass is `tramy reindex`).
//!
//! Each node journals its own writes (its own `data_dir`). Entries are not fsynced: a process
//! crash keeps them (the page cache survives), and a machine that loses power mid-write may
//! leave an object that only `tramy reindex` or the background scrub finds.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// The journal folder of one node.
#[derive(Debug, Clone)]
pub struct WriteJournal {
    dir: PathBuf,
}

/// A write in flight: settled with [`JournalEntry::settled`]. Dropping it unsettled (a
/// cancelled reception) leaves it for the next start-up to reconcile.
#[derive(Debug)]
#[must_use = "settle the entry once the write's outcome is known"]
pub struct JournalEntry {
    /// `None`: nothing was journaled (the journal could not be written).
    path: Option<PathBuf>,
}

/// An entry a previous run left: an object write whose outcome is unknown.
#[derive(Debug, Clone)]
pub struct UnsettledWrite {
    /// The object key.
    pub key: String,
    /// When the write began.
    pub began: SystemTime,
    path: PathBuf,
}

impl WriteJournal {
    /// The journal in `data_dir/journal`, created if needed.
    pub fn open(data_dir: &Path) -> std::io::Result<WriteJournal> {
        let dir = data_dir.join("journal");
        std::fs::create_dir_all(&dir)?;
        Ok(WriteJournal { dir })
    }

    /// Notes that the object at `key` is about to be written.
    pub fn begin(&self, key: &str) -> std::io::Result<JournalEntry> {
        // Named by the key's hash: keys hold `/`; concurrent writes of one key (a re-sent
        // instance) share an entry, which is harmless: either settles it, and start-up checks
        // the key against the index anyway.
        let path = self.dir.join(hex::encode(Sha256::digest(key.as_bytes())));
        // Written aside and renamed, so an entry is whole or absent whenever the process dies.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, key)?;
        std::fs::rename(&partial, &path)?;
        Ok(JournalEntry { path: Some(path) })
    }

    /// The writes earlier runs left unsettled.
    pub fn unsettled(&self) -> std::io::Result<Vec<UnsettledWrite>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "partial") {
                // Cut off before it was renamed: no object write had started.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Ok(key) = std::fs::read_to_string(&path) else {
                continue;
            };
            if key.is_empty() {
                // An entry from before entries were renamed into place, cut off while it was
                // written: `begin` had not returned, so no object write had started.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let began = entry.metadata()?.modified()?;
            out.push(UnsettledWrite { key, began, path });
        }
        Ok(out)
    }
}

impl JournalEntry {
    /// An entry for nothing, where a write failed before it was journaled.
    pub fn none() -> JournalEntry {
        JournalEntry { path: None }
    }

    /// The write is settled: indexed, or removed again.
    pub fn settled(self) {
        // A missing file was settled by a concurrent write of the same key.
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl UnsettledWrite {
    /// Reconciled at start-up.
    pub fn settled(self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsettled_writes_are_listed_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let journal = WriteJournal::open(dir.path()).unwrap();
        let done = journal.begin("studies/1/series/2/instances/3.dcm").unwrap();
        let _crashed = journal.begin("studies/1/series/2/instances/4.dcm").unwrap();
        done.settled();
        let left = journal.unsettled().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].key, "studies/1/series/2/instances/4.dcm");
        left.into_iter().for_each(|w| w.settled().unwrap());
        assert!(journal.unsettled().unwrap().is_empty());
    }

    #[test]
    fn an_entry_cut_off_while_it_was_written_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = WriteJournal::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("journal").join("0123abcd"), "").unwrap();
        std::fs::write(dir.path().join("journal").join("4567.partial"), "studies/1").unwrap();
        assert!(journal.unsettled().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("journal"))
                .unwrap()
                .count(),
            0
        );
    }
}
