//! ClickHouse DDL and migrations (**contract**: the logical schema of
//! [`crate::schema`], mapped as described in [`super`]).
//!
//! Everything here runs on ClickHouse 18.16 (Debian) and on current
//! releases: new-style `MergeTree() PARTITION BY … ORDER BY …`, no
//! `Nullable` in sort keys, no `LowCardinality`, no codecs, no `TTL` (added
//! separately when the server is ≥ 19.6, see
//! [`super::ClickHouseStore::set_retention_ttl`]).

/// Newest schema version this build writes into `schema_version`.
pub const SCHEMA_VERSION: u32 = 5;

/// Holds one row per applied migration; `max(version)` is the schema's version.
pub const SCHEMA_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version    UInt32,
    applied_at DateTime('UTC')
) ENGINE = MergeTree() ORDER BY version";

/// `MIGRATIONS[v]` brings version `v` to `v + 1`; every statement is
/// idempotent (`IF NOT EXISTS`) so two processes migrating at once agree.
pub const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE IF NOT EXISTS runs (
    run_id         UInt64,
    version        UInt64,
    engine_id      String,
    command        String,
    started_at     DateTime('UTC'),
    started_at_ns  Int64,
    finished_at_ns Int64,
    status         String,
    inputs         String,
    packets        UInt64,
    bytes          UInt64,
    decoded        String
) ENGINE = ReplacingMergeTree(version) ORDER BY run_id",
        "CREATE TABLE IF NOT EXISTS tasks (
    run_id    UInt64,
    name      String,
    kind      String,
    key       String,
    window_ns Int64
) ENGINE = MergeTree() ORDER BY (run_id, name)",
        "CREATE TABLE IF NOT EXISTS exact_rows (
    run_id          UInt64,
    engine_id       String,
    task            String,
    window_start    DateTime('UTC'),
    window_start_ns Int64,
    window_end_ns   Int64,
    src_ip          FixedString(16),
    dst_ip          FixedString(16),
    src_port        UInt16,
    dst_port        UInt16,
    protocol        UInt8,
    vlan            UInt16,
    packets         UInt64,
    bytes           UInt64,
    first_seen      Int64,
    last_seen       Int64
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(window_start)
ORDER BY (task, window_start, src_ip, dst_ip, src_port, dst_port, protocol, vlan)",
        "CREATE TABLE IF NOT EXISTS sketch_rows (
    run_id          UInt64,
    engine_id       String,
    task            String,
    algorithm       String,
    measure         String,
    period_start    DateTime('UTC'),
    period_start_ns Int64,
    period_end_ns   Int64,
    src_ip          FixedString(16),
    dst_ip          FixedString(16),
    src_port        UInt16,
    dst_port        UInt16,
    protocol        UInt8,
    vlan            UInt16,
    estimate        UInt64,
    error_bound     UInt64
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(period_start)
ORDER BY (task, period_start, measure, src_ip, dst_ip, src_port, dst_port, protocol, vlan)",
    ],
    // Version 2: what each engine applied from the bus (see `crate::schema`).
    &["CREATE TABLE IF NOT EXISTS bus_progress (
    engine_id     String,
    consumer      String,
    version       UInt64,
    state         String,
    updated_at_ns Int64
) ENGINE = ReplacingMergeTree(version) ORDER BY (engine_id, consumer)"],
    // Version 3: sketch rows of a period split between engines (18.16
    // knows no `ADD COLUMN IF NOT EXISTS`: "already exists" counts as done).
    &["ALTER TABLE sketch_rows ADD COLUMN partial UInt8 DEFAULT 0"],
    // Version 4: a sketch task's algorithm with its definition (known
    // before it stores any estimate).
    &["ALTER TABLE tasks ADD COLUMN algorithm String DEFAULT ''"],
    // Version 5: alert transitions (a re-inserted transition replaces
    // itself: read with FINAL) and the standalone alerter's state.
    &[
        "CREATE TABLE IF NOT EXISTS alerts (
    rule            String,
    task            String,
    key             String,
    metric          String,
    value           Float64,
    operator        String,
    threshold       Float64,
    severity        String,
    state           String,
    window_start    DateTime('UTC'),
    window_start_ns Int64,
    starts_at_ns    Int64,
    ends_at_ns      Int64,
    analysis        String,
    recorded_at_ns  Int64
) ENGINE = ReplacingMergeTree(recorded_at_ns)
PARTITION BY toYYYYMM(window_start)
ORDER BY (rule, key, state, starts_at_ns)",
        "CREATE TABLE IF NOT EXISTS alert_state (
    alerter       String,
    version       UInt64,
    state         String,
    updated_at_ns Int64
) ENGINE = ReplacingMergeTree(version) ORDER BY alerter",
    ],
];

/// Tables partitioned by day (retention drops their partitions), with the
/// `DateTime` column the partition key is computed from.
pub const PARTITIONED: &[(&str, &str)] = &[
    ("exact_rows", "window_start"),
    ("sketch_rows", "period_start"),
];

/// Whether a `version()` string is at least `major.minor`.
pub fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(!version_at_least("18.16.1", 19, 6));
        assert!(!version_at_least("19.5.9.1", 19, 6));
        assert!(version_at_least("19.6.2", 19, 6));
        assert!(version_at_least("24.8.4.13", 19, 6));
        assert!(!version_at_least("garbage", 19, 6));
    }
}
