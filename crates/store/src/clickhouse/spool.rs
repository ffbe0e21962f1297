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
//! directory would insert its batches twice.

use super::rows::Batch;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Version of the file layout.
const FORMAT: u32 = 1;

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
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, rows) = stem.split_once('-')?;
    Some((seq.parse().ok()?, rows.parse().ok()?))
}

impl Spool {
    /// Lists what earlier runs left in the directory (created on the first
    /// write, so a healthy server never leaves an empty directory behind).
    pub fn open(dir: &Path) -> io::Result<Spool> {
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
        let next_seq = found.last().map_or(0, |f| f.0 + 1);
        Ok(Spool {
            dir: dir.to_path_buf(),
            next_seq,
            entries: found
                .into_iter()
                .map(|(_, rows, path)| Entry { path, rows })
                .collect(),
        })
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
        let rejected = self.dir.join("rejected");
        fs::create_dir_all(&rejected)?;
        self.write(&rejected, batch)
    }

    fn write(&mut self, dir: &Path, batch: &Batch) -> io::Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let name = format!("{:020}-{}.json", self.next_seq, batch.len());
        let path = dir.join(&name);
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
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.next_seq += 1;
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
        let rejected = self.dir.join("rejected");
        fs::create_dir_all(&rejected)?;
        let to = rejected.join(e.path.file_name().unwrap_or_default());
        fs::rename(&e.path, &to)?;
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
