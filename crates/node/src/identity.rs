//! Which input a run read, precisely enough to notice a re-analysis of the
//! same capture: its canonical path, its size and a fingerprint of its
//! content. `analyze` replaces an earlier run of the same inputs in the
//! same store (unless `--append`), so repeating a command never doubles the
//! answers.

use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes hashed at each end of a file: enough to tell captures apart (their
/// headers, first and last packets) without reading gigabytes twice.
const EDGE: u64 = 1 << 20;

/// An input's identity: `{"canonical": …, "size": …, "fingerprint":
/// "xxh3:<hex>"}` (xxh3-64 of the size and the first and last MiB), or None
/// when the file cannot be read (then no run is replaced for it).
pub fn of_file(path: &Path) -> Option<Value> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let mut file = std::fs::File::open(&canonical).ok()?;
    let size = file.metadata().ok()?.len();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&size.to_le_bytes());
    let mut buf = Vec::with_capacity(EDGE as usize);
    (&mut file).take(EDGE).read_to_end(&mut buf).ok()?;
    hasher.update(&buf);
    if size > EDGE {
        buf.clear();
        file.seek(SeekFrom::Start(size - EDGE)).ok()?;
        file.take(EDGE).read_to_end(&mut buf).ok()?;
        hasher.update(&buf);
    }
    Some(json!({
        "canonical": canonical.display().to_string(),
        "size": size,
        "fingerprint": format!("xxh3:{:016x}", hasher.digest()),
    }))
}

/// The identities of a run's inputs as recorded in `runs.inputs` (each
/// input object's `canonical`, `size`, `fingerprint`), sorted; None when
/// some input has none (a live run, an older store, an unreadable file).
pub fn of_recorded(inputs: &Value) -> Option<Vec<(String, u64, String)>> {
    let list = inputs.as_array()?;
    if list.is_empty() {
        return None;
    }
    let mut out = list
        .iter()
        .map(|i| {
            Some((
                i["canonical"].as_str()?.to_string(),
                i["size"].as_u64()?,
                i["fingerprint"].as_str()?.to_string(),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    out.sort();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_same_identity_and_a_changed_byte_changes_it() {
        let dir = std::env::temp_dir().join(format!("ns-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.pcap");
        let mut data = vec![7u8; 3 * EDGE as usize];
        std::fs::write(&a, &data).unwrap();
        let first = of_file(&a).unwrap();
        assert_eq!(of_file(&a).unwrap(), first);
        assert_eq!(first["size"], 3 * EDGE);
        // A change in the last MiB is seen; the path is canonical.
        data[3 * EDGE as usize - 1] = 8;
        std::fs::write(&a, &data).unwrap();
        let changed = of_file(&a).unwrap();
        assert_ne!(changed["fingerprint"], first["fingerprint"]);
        let dotted = dir.join(".").join("a.pcap");
        assert_eq!(of_file(&dotted).unwrap()["canonical"], changed["canonical"]);
        let recorded = json!([{"path": "x", "canonical": "/p", "size": 1, "fingerprint": "f"}]);
        assert_eq!(
            of_recorded(&recorded),
            Some(vec![("/p".to_string(), 1, "f".to_string())])
        );
        assert_eq!(of_recorded(&json!(["a.pcap"])), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
