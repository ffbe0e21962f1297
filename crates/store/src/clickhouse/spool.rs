//! The local spool: batches the server could not take, one file each,
//! replayed oldest first.
//!
//! A file is `<seq, 20 digits>-<rows>.json` holding
//! `{"format":1,"table":"exact_rows","batch":{"exact_rows":[…]}}`. It is
//! written to `*.tmp`, fsynced, renamed into place and the directory fsynced,
//! so a crash leaves either the whole batch or no file (stray `*.tmp` files
//! are removed on open). Files whose batch the server refused (not an
//! outage: a bad batch) move to `rejected/` for a person to look at, so one
//! bad batch never blocks the ones behind it.
//!
//! One writer per spool directory: two processes replaying the same
//! directory would insert its batches twice. A live writer holds an
//! exclusive lock on `<dir>/.lock`; a second process asking for the same
//! directory gets `<dir>-<pid>` instead. A writer that dies leaves its
//! batches behind (acknowledged upstream: they must not be lost), so every
//! writer starting under the same parent adopts the batches of sibling
//! directories that no live process holds ([`Spool::adopt_orphans`]).

use super::rows::Batch;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Version of the file layout.
const FORMAT: u32 = 1;

/// Where refused batches go, inside the spool directory.
const REJECTED: &str = "rejected";

/// The file a live writer keeps locked in its spool directory.
const LOCK: &str = ".lock";

/// Creates `dir` (and its parents) so that the new entries survive a
/// crash: each directory created is fsynced in its parent.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(
        dir.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Makes a directory's entries (new, renamed or removed files) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[derive(Serialize, Deserialize)]
struct SpoolFile {
    format: u32,
    table: String,
    batch: Batch,
}

/// One spooled batch.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub path: PathBuf,
    pub rows: u64,
}

/// An open spool directory.
pub(crate) struct Spool {
    dir: PathBuf,
    next_seq: u64,
    entries: VecDeque<Entry>,
    /// Held (locked) for as long as the spool is open.
    _lock: File,
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, rows) = stem.split_once('-')?;
    Some((seq.parse().ok()?, rows.parse().ok()?))
}

impl Spool {
    /// Opens `dir` for this process alone and lists what earlier runs left
    /// in it; when a live process holds `dir`, opens `<dir>-<pid>` instead.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        if let Some(spool) = Spool::open_locked(dir)? {
            return Ok(spool);
        }
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-{}", std::process::id()));
        let own = dir.with_file_name(name);
        tracing::info!(message = "spool directory in use by another process; using a directory of our own",
            busy = %dir.display(), spool = %own.display());
        Spool::open_locked(&own)?
            .ok_or_else(|| io::Error::other(format!("spool directory {} is in use", own.display())))
    }

    /// Batches waiting in `dir`, without opening (locking) it.
    pub fn peek_len(dir: &Path) -> usize {
        fs::read_dir(dir).map_or(0, |l| {
            l.flatten()
                .filter(|e| e.file_name().to_str().and_then(parse_name).is_some())
                .count()
        })
    }

    /// Takes over the batches of sibling directories (same parent) that no
    /// live process holds: a writer that died with rows in its spool. They
    /// are moved behind this spool's own, in their order; returns how many
    /// batches and rows were adopted.
    pub fn adopt_orphans(&mut self) -> io::Result<(usize, u64)> {
        let Some(parent) = self.dir.parent().map(Path::to_path_buf) else {
            return Ok((0, 0));
        };
        let (mut batches, mut rows) = (0, 0);
        for sibling in fs::read_dir(&parent)?.flatten() {
            let path = sibling.path();
            // Only spool directories (a writer left its lock file there).
            if path == self.dir || !path.join(LOCK).is_file() {
                continue;
            }
            // Held by a live writer: not an orphan.
            let Some(mut orphan) = Spool::open_locked(&path)? else {
                continue;
            };
            while let Some(e) = orphan.entries.pop_front() {
                let to = self.free_name(&self.dir.clone(), e.rows);
                fs::rename(&e.path, &to)?;
                self.entries.push_back(Entry {
                    path: to,
                    rows: e.rows,
                });
                batches += 1;
                rows += e.rows;
            }
            sync_dir(&self.dir)?;
            sync_dir(&path)?;
            drop(orphan);
            // Gone once empty (a rejected/ folder stays for a person).
            let _ = fs::remove_file(path.join(LOCK));
            let _ = fs::remove_dir(&path);
        }
        Ok((batches, rows))
    }

    /// Opens and locks `dir`; `None` when a live process holds it.
    fn open_locked(dir: &Path) -> io::Result<Option<Spool>> {
        create_dir_durable(dir)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut found = Vec::new();
        let listing = match fs::read_dir(dir) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        for entry in listing.into_iter().flatten() {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            if let Some((seq, rows)) = parse_name(name) {
                found.push((seq, rows, entry.path()));
            }
        }
        found.sort_by_key(|f| f.0);
        // Sequence numbers continue after every file this spool ever
        // wrote, `rejected/` included: a restart that only looked at the
        // main folder would reuse a rejected file's number and its name.
        let rejected_max = match fs::read_dir(dir.join(REJECTED)) {
            Ok(listing) => listing
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(parse_name))
                .map(|(seq, _)| seq)
                .max(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let next_seq = found
            .last()
            .map(|f| f.0)
            .max(rejected_max)
            .map_or(0, |seq| seq.saturating_add(1));
        Ok(Some(Spool {
            dir: dir.to_path_buf(),
            next_seq,
            entries: found
                .into_iter()
                .map(|(_, rows, path)| Entry { path, rows })
                .collect(),
            _lock: lock,
        }))
    }

    /// Spooled batches waiting to be replayed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rows waiting to be replayed.
    pub fn rows(&self) -> u64 {
        self.entries.iter().map(|e| e.rows).sum()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a batch durably behind the others.
    pub fn push(&mut self, batch: &Batch) -> io::Result<()> {
        let path = self.write(&self.dir.clone(), batch)?;
        self.entries.push_back(Entry {
            path,
            rows: batch.len() as u64,
        });
        Ok(())
    }

    /// Writes a batch the server refused straight into `rejected/`.
    pub fn push_rejected(&mut self, batch: &Batch) -> io::Result<PathBuf> {
        let rejected = self.dir.join(REJECTED);
        self.write(&rejected, batch)
    }

    /// A name in `dir` that no file has: the next sequence number, skipped
    /// past any file already there (never overwrite a batch).
    fn free_name(&mut self, dir: &Path, rows: u64) -> PathBuf {
        loop {
            let path = dir.join(format!("{:020}-{rows}.json", self.next_seq));
            self.next_seq = self.next_seq.saturating_add(1);
            if !path.exists() {
                return path;
            }
        }
    }

    /// Writes, fsyncs and renames the file into place, then fsyncs the
    /// directory: only then is the batch reported as spooled.
    fn write(&mut self, dir: &Path, batch: &Batch) -> io::Result<PathBuf> {
        create_dir_durable(dir)?;
        let path = self.free_name(dir, batch.len() as u64);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let tmp = dir.join(format!("{name}.tmp"));
        let file = SpoolFile {
            format: FORMAT,
            table: batch.table().to_string(),
            batch: batch.clone(),
        };
        let result = (|| {
            let mut f = io::BufWriter::new(File::create(&tmp)?);
            serde_json::to_writer(&mut f, &file)?;
            f.flush()?;
            f.get_ref().sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            sync_dir(dir)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(path)
    }

    /// The oldest waiting batch, read back.
    pub fn oldest(&self) -> Option<(Entry, io::Result<Batch>)> {
        let entry = self.entries.front()?.clone();
        let batch = fs::read(&entry.path).and_then(|bytes| {
            let file: SpoolFile = serde_json::from_slice(&bytes)?;
            if file.format != FORMAT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("spool format {} (this build reads {FORMAT})", file.format),
                ));
            }
            Ok(file.batch)
        });
        Some((entry, batch))
    }

    /// Forgets the oldest batch once the server has it.
    pub fn remove_oldest(&mut self) -> io::Result<()> {
        if let Some(e) = self.entries.pop_front() {
            fs::remove_file(&e.path)?;
        }
        Ok(())
    }

    /// Moves the oldest batch to `rejected/` (the server refused it or it
    /// cannot be read); returns where it went.
    pub fn reject_oldest(&mut self) -> io::Result<Option<PathBuf>> {
        let Some(e) = self.entries.pop_front() else {
            return Ok(None);
        };
        let rejected = self.dir.join(REJECTED);
        create_dir_durable(&rejected)?;
        let mut to = rejected.join(e.path.file_name().unwrap_or_default());
        if to.exists() {
            to = self.free_name(&rejected, e.rows);
        }
        fs::rename(&e.path, &to)?;
        sync_dir(&rejected)?;
        sync_dir(&self.dir)?;
        Ok(Some(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clickhouse::rows::TaskRow;

    fn batch(n: u64) -> Batch {
        Batch::Tasks(
            (0..n)
                .map(|i| TaskRow {
                    run_id: i,
                    name: format!("t{i}"),
                    kind: "exact".into(),
                    key: "[\"SrcIP\"]".into(),
                    window_ns: 60,
                    algorithm: String::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn batches_come_back_oldest_first_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).unwrap();
        for n in 1..=3 {
            spool.push(&batch(n)).unwrap();
        }
        fs::write(
            dir.path().join("00000000000000000099-1.json.tmp"),
            "partial",
        )
        .unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path()).unwrap();
        assert_eq!((spool.len(), spool.rows()), (3, 6));
        assert!(!dir.path().join("00000000000000000099-1.json.tmp").exists());
        spool.push(&batch(4)).unwrap();
        for n in 1..=4 {
            let (entry, b) = spool.oldest().unwrap();
            assert_eq!(entry.rows, n);
            assert_eq!(b.unwrap(), batch(n));
            spool.remove_oldest().unwrap();
        }
        assert!(spool.is_empty());
    }

    fn rejected_files(dir: &Path) -> Vec<(String, Batch)> {
        let mut files: Vec<_> = fs::read_dir(dir.join(REJECTED))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let file: SpoolFile = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
                (
                    p.file_name().unwrap().to_str().unwrap().to_string(),
                    file.batch,
                )
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
    }

    #[test]
    fn one_live_writer_per_directory_and_a_dead_writers_batches_are_adopted() {
        let root = tempfile::tempdir().unwrap();
        let a_dir = root.path().join("db").join("engine-a");
        let mut a = Spool::open(&a_dir).unwrap();
        a.push(&batch(1)).unwrap();
        a.push(&batch(2)).unwrap();
        // A second writer asking for the same directory gets its own.
        let mut b = Spool::open(&a_dir).unwrap();
        assert_ne!(b.dir(), a.dir());
        assert_eq!(b.len(), 0);
        // While `a` lives, nobody takes its batches.
        assert_eq!(b.adopt_orphans().unwrap(), (0, 0));
        drop(a); // the writer dies with two batches spooled
        let mut c = Spool::open(&root.path().join("db").join("engine-c")).unwrap();
        c.push(&batch(5)).unwrap();
        assert_eq!(c.adopt_orphans().unwrap(), (2, 3));
        assert!(!a_dir.exists(), "the orphan directory is gone");
        let mut rows = Vec::new();
        while let Some((_, batch)) = c.oldest() {
            rows.push(batch.unwrap().len());
            c.remove_oldest().unwrap();
        }
        assert_eq!(
            rows,
            [5, 1, 2],
            "ours first, then the adopted in their order"
        );
        drop(b);
    }

    #[test]
    fn rejected_files_are_never_overwritten_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).unwrap();
        // First life: one batch refused outright, one spooled then refused
        // on replay; the main folder ends up empty.
        spool.push_rejected(&batch(2)).unwrap();
        spool.push(&batch(2)).unwrap();
        spool.reject_oldest().unwrap().unwrap();
        assert!(spool.is_empty());
        drop(spool);
        assert_eq!(rejected_files(dir.path()).len(), 2);

        // Second life: both ways of reaching rejected/ again, with batches
        // of the same size (so the same name if the number were reused).
        let mut spool = Spool::open(dir.path()).unwrap();
        let other = || {
            Batch::Tasks(vec![
                TaskRow {
                    run_id: 7,
                    name: "second-life".into(),
                    kind: "exact".into(),
                    key: "[]".into(),
                    window_ns: 1,
                    algorithm: String::new(),
                };
                2
            ])
        };
        spool.push_rejected(&other()).unwrap();
        spool.push(&other()).unwrap();
        spool.reject_oldest().unwrap().unwrap();
        let files = rejected_files(dir.path());
        assert_eq!(
            files.len(),
            4,
            "{:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        assert_eq!(files[0].1, batch(2), "first life's files are intact");
        assert_eq!(files[1].1, batch(2));
        assert_eq!(files[2].1, other());
        assert_eq!(files[3].1, other());
    }

    #[test]
    fn a_rejected_name_already_taken_gets_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).unwrap();
        spool.push(&batch(1)).unwrap();
        let name = spool.oldest().unwrap().0.path;
        // A file of that name already sits in rejected/ (copied by hand).
        fs::create_dir_all(dir.path().join(REJECTED)).unwrap();
        fs::write(
            dir.path().join(REJECTED).join(name.file_name().unwrap()),
            serde_json::to_vec(&SpoolFile {
                format: FORMAT,
                table: "tasks".into(),
                batch: batch(3),
            })
            .unwrap(),
        )
        .unwrap();
        let to = spool.reject_oldest().unwrap().unwrap();
        assert_ne!(to.file_name(), name.file_name());
        let files = rejected_files(dir.path());
        assert_eq!(files.len(), 2);
        assert!(files.iter().any(|f| f.1 == batch(3)));
        assert!(files.iter().any(|f| f.1 == batch(1)));
    }

    #[test]
    fn a_damaged_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path()).unwrap();
        spool.push(&batch(2)).unwrap();
        spool.push(&batch(1)).unwrap();
        let first = spool.oldest().unwrap().0.path;
        fs::write(&first, "{not json").unwrap();
        assert!(spool.oldest().unwrap().1.is_err());
        let to = spool.reject_oldest().unwrap().unwrap();
        assert!(to.starts_with(dir.path().join("rejected")));
        assert_eq!(spool.oldest().unwrap().1.unwrap(), batch(1));
    }
}
