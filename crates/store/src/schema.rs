//! The store schema (**contract**: queries and other tools read these tables).
//!
//! Times are nanoseconds since the Unix epoch (UTC). Addresses are 16-byte
//! blobs, IPv4 stored IPv4-mapped (`::ffff:a.b.c.d`), so byte order is address
//! order and CIDR filters become range scans. A key column is NULL when the
//! task's key does not include that dimension; a `SrcNet/N` or `DstNet/N`
//! dimension stores the network address in `src_ip` / `dst_ip`. `vlan` is
//! 65535 ([`netspectra_model::NO_VLAN`]) for an untagged frame, 0 for a
//! priority-tagged one.
//! `exact_rows` (version 7 on) holds each window's exact rows in blocks:
//! one SQL row per run, engine, task, window and up to 65 536 keys, with
//! the block's totals (`row_count`, `packets`, `bytes`, `first_seen`,
//! `last_seen`) in columns and every key's row — key columns, packets,
//! bytes, first_seen, last_seen, exactly — encoded in `data` (format in
//! `crate::block`). Sums per run, task and window read the columns; per-key
//! questions go through [`crate::read::Reader`], or, for SQL,
//! [`crate::sqlite::expand_exact_rows`], which lays the rows out as the
//! version-6 table did (one row per key) in a temporary table.
//! `sketch_rows` holds each sketch task's reported estimates per period
//! (heavy hitters by packets and bytes, super-spreaders by distinct count).
//! `bus_progress` holds, per engine and consumer, what that engine has
//! applied from the bus (JetStream: the applied batch ranges as JSON),
//! replaced in the same transaction as each window's `exact_rows`, so a
//! restarted engine skips exactly the batches whose rows are stored.
//! `alerts` holds one row per alert transition (firing, resolved), unique
//! per (rule, key, state, starts_at) so a re-evaluation never adds a
//! duplicate; `alert_state` the standalone alerter's instances and cursors.

/// How `tasks.key` holds a task's key (both backends): a JSON array of
/// dimension names, e.g. `["SrcIP","DstPort"]`.
pub fn key_text(key: &[netspectra_model::Dimension]) -> String {
    serde_json::Value::from(key.iter().map(|d| d.to_string()).collect::<Vec<_>>()).to_string()
}

/// `runs.status` of a run a later run replaced (a re-analysis of the same
/// input): queries never read its rows (SQLite deletes them; ClickHouse
/// deletes them in the background).
pub const REPLACED: &str = "replaced";

/// How `tasks.algorithm` holds a task's algorithm (both backends):
/// `countmin`, `hh` or `superspread` for sketch tasks, empty for exact ones.
pub fn algorithm_text(task: &netspectra_model::task::TaskSpec) -> String {
    match task.kind {
        netspectra_model::task::TaskKind::Sketch(a) => a.name().to_string(),
        netspectra_model::task::TaskKind::Exact => String::new(),
    }
}

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 7;

/// Why a file's `user_version` cannot be used.
#[derive(Debug)]
pub(crate) enum VersionProblem {
    /// Written by a newer build.
    Newer(i64),
    /// Negative: no NetSpectra build ever writes that.
    Invalid(i64),
}

impl VersionProblem {
    /// The store error for the file at `path`.
    pub(crate) fn at(self, path: &std::path::Path) -> crate::StoreError {
        let path = path.display().to_string();
        match self {
            VersionProblem::Newer(found) => crate::StoreError::NewerSchema {
                path,
                found,
                supported: SCHEMA_VERSION,
            },
            VersionProblem::Invalid(found) => crate::StoreError::NotAStore {
                path,
                reason: format!("schema version {found} is not one NetSpectra writes"),
            },
        }
    }
}

/// Checks a file's `PRAGMA user_version` (any 32-bit value in a crafted
/// file) and returns it as the index of the first migration to run: only
/// `0..=SCHEMA_VERSION` are accepted, so it can never index out of
/// [`MIGRATIONS`].
pub(crate) fn checked_version(version: i64) -> Result<usize, VersionProblem> {
    if version > SCHEMA_VERSION {
        return Err(VersionProblem::Newer(version));
    }
    usize::try_from(version).map_err(|_| VersionProblem::Invalid(version))
}

/// Statements that bring an empty database to each version, in order:
/// `MIGRATIONS[v]` upgrades version `v` to `v + 1`.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    run_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    engine_id       TEXT    NOT NULL,
    command         TEXT    NOT NULL,
    started_at_ns   INTEGER NOT NULL,
    finished_at_ns  INTEGER,
    status          TEXT    NOT NULL,      -- running | complete | damaged | failed | replaced
    inputs          TEXT    NOT NULL,      -- JSON array of inputs and their outcome
    packets         INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    decoded         TEXT                   -- JSON decode counters
);
CREATE TABLE tasks (
    run_id      INTEGER NOT NULL REFERENCES runs(run_id),
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,          -- exact
    key         TEXT    NOT NULL,          -- JSON array of dimension names
    window_ns   INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE exact_rows (
    run_id       INTEGER NOT NULL,
    engine_id    TEXT    NOT NULL,
    task         TEXT    NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    src_ip       BLOB,
    dst_ip       BLOB,
    src_port     INTEGER,
    dst_port     INTEGER,
    protocol     INTEGER,
    vlan         INTEGER,
    packets      INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL
);
-- One integer index: windows arrive in time order, so inserts append at the
-- index's right edge (a (task, window) index costs a third of a run's time).
CREATE INDEX exact_rows_by_window ON exact_rows (window_start);
"#,
    r#"
CREATE TABLE sketch_rows (
    run_id       INTEGER NOT NULL,
    engine_id    TEXT    NOT NULL,
    task         TEXT    NOT NULL,
    algorithm    TEXT    NOT NULL,     -- countmin | hh | superspread
    measure      TEXT    NOT NULL,     -- packets | bytes | distinct
    period_start INTEGER NOT NULL,
    period_end   INTEGER NOT NULL,
    src_ip       BLOB,
    dst_ip       BLOB,
    src_port     INTEGER,
    dst_port     INTEGER,
    protocol     INTEGER,
    vlan         INTEGER,
    estimate     INTEGER NOT NULL,
    error_bound  INTEGER NOT NULL
);
CREATE INDEX sketch_rows_by_task_period ON sketch_rows (task, period_start);
"#,
    r#"
CREATE TABLE bus_progress (
    engine_id      TEXT    NOT NULL,
    consumer       TEXT    NOT NULL,      -- e.g. the JetStream stream prefix
    state          TEXT    NOT NULL,      -- opaque to the store (JSON)
    updated_at_ns  INTEGER NOT NULL,
    PRIMARY KEY (engine_id, consumer)
);
"#,
    // Version 4: sketch rows of a period split between engines.
    r#"
ALTER TABLE sketch_rows ADD COLUMN partial INTEGER NOT NULL DEFAULT 0;
"#,
    // Version 5: a sketch task's algorithm with its definition (known
    // before it stores any estimate; empty for exact tasks).
    r#"
ALTER TABLE tasks ADD COLUMN algorithm TEXT NOT NULL DEFAULT '';
"#,
    // Version 6: alert transitions and the standalone alerter's state.
    r#"
CREATE TABLE alerts (
    rule           TEXT    NOT NULL,
    task           TEXT    NOT NULL,
    key            TEXT    NOT NULL,      -- JSON object, {} for task-wide rules
    metric         TEXT    NOT NULL,
    value          REAL    NOT NULL,
    operator       TEXT    NOT NULL,
    threshold      REAL    NOT NULL,
    severity       TEXT    NOT NULL,
    state          TEXT    NOT NULL,      -- firing | resolved
    window_start   INTEGER NOT NULL,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER,
    analysis       TEXT,
    recorded_at_ns INTEGER NOT NULL,
    PRIMARY KEY (rule, key, state, starts_at)
);
CREATE INDEX alerts_by_window ON alerts (window_start);
CREATE TABLE alert_state (
    alerter        TEXT    PRIMARY KEY,
    state          TEXT    NOT NULL,      -- JSON, opaque to the store
    updated_at_ns  INTEGER NOT NULL
);
"#,
    // Version 7: exact rows in blocks. One row of `exact_rows` is now a
    // block of up to 65 536 keys of one run, engine, task and window: its
    // totals in columns, its rows (key, packets, bytes, first_seen,
    // last_seen, exactly) encoded in `data` (`crate::block`). About a fifth
    // of the size, written and read in bulk. The version-6 rows are
    // converted by `crate::sqlite::convert_v6_rows` in the same transaction.
    r#"
ALTER TABLE exact_rows RENAME TO exact_rows_v6;
DROP INDEX exact_rows_by_window;
CREATE TABLE exact_rows (
    run_id       INTEGER NOT NULL,
    engine_id    TEXT    NOT NULL,
    task         TEXT    NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    row_count    INTEGER NOT NULL,     -- keys in the block
    packets      INTEGER NOT NULL,     -- sums over the block's keys
    bytes        INTEGER NOT NULL,
    first_seen   INTEGER NOT NULL,     -- min over the block's keys
    last_seen    INTEGER NOT NULL,     -- max over the block's keys
    data         BLOB    NOT NULL      -- the keys' rows (crate::block)
);
CREATE INDEX exact_rows_by_window ON exact_rows (window_start);
"#,
];

/// The first version whose `exact_rows` holds blocks.
pub(crate) const BLOCKS_VERSION: usize = 7;
