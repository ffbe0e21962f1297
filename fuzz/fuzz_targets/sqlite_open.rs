//! Opening any file as a store, as the writer (`SqliteStore::open`, which
//! migrates) and as the API's reader (`Reader::open`, then a few
//! questions): a clear `StoreError`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netspectra_store::read::Reader;
use netspectra_store::{SqliteStore, StoreUrl};
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ns-fuzz-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let path = dir().join("store.db");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::write(&path, data).unwrap();
    // The reader first (it must not change the file), then the writer.
    if let Ok(reader) = Reader::open(&StoreUrl::Sqlite(path.clone())) {
        runtime().block_on(async {
            let _ = reader.ping().await;
            let _ = reader.tasks().await;
            let _ = reader.runs(10).await;
        });
    }
    let _ = SqliteStore::open(&path);
});
