//! The exact-row questions on SQLite, answered in Rust over a streaming
//! scan of the blocks in scope (`crate::block`): SQLite selects the blocks
//! (task, runs, window range, through the index on `window_start`), each is
//! decoded into one reused buffer, the key filter is applied to its rows
//! and they are folded into the answer. The answers are those of the SQL in
//! `sql.rs` (which ClickHouse still runs): same sums, same distinct counts,
//! same order and ties.

use super::sql::{Param, Query};
use super::{Filter, KeyedRow, Measure, NumberRow};
use crate::block::{self, Columns};
use netspectra_model::window::FlowCounters;
use netspectra_model::FlowKey;
use rusqlite::Connection;
use std::cmp::Ordering;
use std::collections::HashSet;

type Hasher = foldhash::fast::FixedState;

/// One block as the scan hands it over.
struct Block<'a> {
    run_id: i64,
    engine_id: &'a str,
    start: u64,
    end: u64,
    rows: &'a [(FlowKey, FlowCounters)],
}

fn matches(f: &Filter, c: Columns, k: &FlowKey) -> bool {
    let ip = |range: Option<netspectra_model::ip::Cidr>, present: bool, a: &[u8; 16]| {
        range.is_none_or(|r| present && *a >= r.first && *a <= r.last)
    };
    let num = |want: Option<u16>, present: bool, v: u16| want.is_none_or(|w| present && v == w);
    ip(f.src_ip, c.src_ip(), &k.src_ip)
        && ip(f.dst_ip, c.dst_ip(), &k.dst_ip)
        && num(f.src_port, c.src_port(), k.src_port)
        && num(f.dst_port, c.dst_port(), k.dst_port)
        && num(
            f.protocol.map(u16::from),
            c.protocol(),
            u16::from(k.protocol),
        )
}

fn is_empty(f: &Filter) -> bool {
    *f == Filter::default()
}

fn value(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Int(v) => rusqlite::types::Value::Integer(*v),
        Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Param::Ip(ip) => rusqlite::types::Value::Blob(ip.to_vec()),
    }
}

/// Runs the block query and hands every block's matching rows to `each`.
fn scan(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
    mut each: impl FnMut(&Block<'_>),
) -> rusqlite::Result<()> {
    scan_into(conn, q, filter, |m, rows| {
        each(&Block {
            rows: rows.as_slice(),
            ..*m
        })
    })
}

/// [`scan`], handing the block's rows in the decode buffer itself (the
/// [`Block`]'s `rows` are empty), which the callee may take to keep them.
fn scan_into(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
    mut each: impl FnMut(&Block<'_>, &mut Vec<(FlowKey, FlowCounters)>),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(&q.text)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(q.params.iter().map(value)))?;
    let mut buf = Vec::new();
    let unsigned = |v: i64| v.max(0) as u64;
    while let Some(r) = rows.next()? {
        let data = r.get_ref(4)?.as_blob()?;
        let columns = block::decode(data, &mut buf).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Blob, Box::new(e))
        })?;
        if !is_empty(filter) {
            buf.retain(|(k, _)| matches(filter, columns, k));
        }
        each(
            &Block {
                run_id: r.get(0)?,
                engine_id: r.get_ref(1)?.as_str()?,
                start: unsigned(r.get(2)?),
                end: unsigned(r.get(3)?),
                rows: &[],
            },
            &mut buf,
        );
    }
    Ok(())
}

/// Per key: packets, bytes, first seen, last seen, distinct windows and
/// rows. Blocks come in window order, so a key's windows are counted by
/// noting the last one it was seen in.
#[derive(Clone, Copy)]
struct Agg {
    c: FlowCounters,
    windows: u64,
    rows: u64,
    last_window: u64,
}

impl Agg {
    fn new(c: &FlowCounters, window: u64) -> Agg {
        Agg {
            c: *c,
            windows: 1,
            rows: 1,
            last_window: window,
        }
    }

    fn add(&mut self, c: &FlowCounters, window: u64) {
        self.c.merge(c);
        self.rows += 1;
        if self.last_window != window {
            self.windows += 1;
            self.last_window = window;
        }
    }
}

/// Every matching key with its sums, in the order keys were first seen:
/// `keys[i]` has `aggs[i]`.
#[derive(Default)]
struct Groups {
    keys: Vec<FlowKey>,
    aggs: Vec<Agg>,
}

/// Folds rows into [`Groups`]: a table of 4-byte indices (small enough to
/// stay in cache for a million keys) over keys and sums kept in first-seen
/// order, so only a key seen before costs a random access.
struct Grouper {
    table: hashbrown::HashTable<u32>,
    hashes: Vec<u64>,
    groups: Groups,
    hasher: Hasher,
}

impl Grouper {
    fn with_capacity(n: usize) -> Grouper {
        Grouper {
            table: hashbrown::HashTable::with_capacity(n),
            hashes: Vec::with_capacity(n),
            groups: Groups {
                keys: Vec::with_capacity(n),
                aggs: Vec::with_capacity(n),
            },
            hasher: Hasher::default(),
        }
    }

    #[inline]
    fn add(&mut self, k: &FlowKey, c: &FlowCounters, window: u64) {
        use std::hash::BuildHasher as _;
        let h = self.hasher.hash_one(k);
        self.add_hashed(h, k, c, window);
    }

    #[inline]
    fn add_hashed(&mut self, h: u64, k: &FlowKey, c: &FlowCounters, window: u64) {
        let Groups { keys, aggs } = &mut self.groups;
        let hashes = &self.hashes;
        match self
            .table
            .entry(h, |&i| keys[i as usize] == *k, |&i| hashes[i as usize])
        {
            hashbrown::hash_table::Entry::Occupied(e) => aggs[*e.get() as usize].add(c, window),
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(keys.len() as u32);
                keys.push(*k);
                aggs.push(Agg::new(c, window));
                self.hashes.push(h);
            }
        }
    }
}

/// Above this many rows a scan groups on two threads, each owning the keys
/// of one half of the hash space (so their groups never overlap), while
/// the calling thread reads and decodes the blocks.
const PARALLEL_ROWS: usize = 200_000;

/// Every matching key with its sums. The rows of one (run, engine,
/// window) are distinct keys, so when the scope holds only one such
/// source they are taken as they are, without a hash table.
fn aggregate(conn: &Connection, q: &Query, filter: &Filter) -> rusqlite::Result<Groups> {
    // How many rows at most (to size the tables once), and from how many
    // sources.
    let (rows, sources): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT coalesce(sum(row_count), 0), count(DISTINCT run_id || ' ' || engine_id || ' ' || window_start) FROM ({})",
            q.text.replacen(
                super::sql::BLOCK_COLUMNS,
                "row_count, run_id, engine_id, window_start",
                1
            )
        ))?
        .query_row(rusqlite::params_from_iter(q.params.iter().map(value)), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let rows = usize::try_from(rows).unwrap_or(0);
    if sources <= 1 {
        let mut list = Groups::default();
        scan(conn, q, filter, |b| {
            list.keys.extend(b.rows.iter().map(|(k, _)| *k));
            list.aggs
                .extend(b.rows.iter().map(|(_, c)| Agg::new(c, b.start)));
        })?;
        return Ok(list);
    }
    if rows < PARALLEL_ROWS {
        let mut g = Grouper::with_capacity(rows);
        scan(conn, q, filter, |b| {
            b.rows.iter().for_each(|(k, c)| g.add(k, c, b.start))
        })?;
        return Ok(g.groups);
    }
    type Shared = std::sync::Arc<(Vec<(FlowKey, FlowCounters)>, u64)>;
    std::thread::scope(|s| {
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Shared>();
        let mut halves = Vec::new();
        let mut senders = Vec::new();
        for half in 0..2u64 {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Shared>(4);
            let recycle = recycle_tx.clone();
            senders.push(tx);
            halves.push(s.spawn(move || {
                use std::hash::BuildHasher as _;
                let mut g = Grouper::with_capacity(rows / 2 + rows / 16);
                for b in rx {
                    for (k, c) in &b.0 {
                        let h = g.hasher.hash_one(k);
                        // A bit neither the table's bucket index nor its
                        // control bytes use.
                        if (h >> 40) & 1 == half {
                            g.add_hashed(h, k, c, b.1);
                        }
                    }
                    let _ = recycle.send(b);
                }
                g.groups
            }));
        }
        drop(recycle_tx);
        let mut spare: Vec<Vec<(FlowKey, FlowCounters)>> = Vec::new();
        let scanned = scan_into(conn, q, filter, |b, buf| {
            while let Ok(done) = recycle_rx.try_recv() {
                if let Ok((v, _)) = std::sync::Arc::try_unwrap(done) {
                    spare.push(v);
                }
            }
            // The decoded rows go to the threads as they are; the next
            // block is decoded into a buffer they are done with.
            let v = std::mem::replace(buf, spare.pop().unwrap_or_default());
            let shared: Shared = std::sync::Arc::new((v, b.start));
            for tx in &senders {
                let _ = tx.send(shared.clone());
            }
        });
        drop(senders);
        let mut parts = halves
            .into_iter()
            .map(|h| h.join().expect("grouping thread"));
        let mut all = parts.next().unwrap_or_default();
        for p in parts {
            all.keys.extend(p.keys);
            all.aggs.extend(p.aggs);
        }
        scanned.map(|()| all)
    })
}

/// The indices of the first `limit` groups in `order`, sorted. A small
/// limit keeps a sorted list of the best so far while reading the sums in
/// memory order; a large one sorts.
fn first_n(
    groups: &Groups,
    limit: usize,
    keep: impl Fn(&Agg) -> bool,
    order: impl Fn(usize, usize) -> Ordering,
) -> Vec<usize> {
    let candidates = (0..groups.aggs.len()).filter(|&i| keep(&groups.aggs[i]));
    if limit <= 4096 {
        let mut best: Vec<usize> = Vec::with_capacity(limit + 1);
        for i in candidates {
            if best.len() == limit {
                match best.last() {
                    Some(&worst) if order(i, worst) == Ordering::Less => {}
                    _ => continue,
                }
            }
            let at = best.partition_point(|&j| order(j, i) == Ordering::Less);
            best.insert(at, i);
            best.truncate(limit);
        }
        return best;
    }
    let mut all: Vec<usize> = candidates.collect();
    if limit < all.len() {
        all.select_nth_unstable_by(limit - 1, |&a, &b| order(a, b));
        all.truncate(limit);
    }
    all.sort_unstable_by(|&a, &b| order(a, b));
    all
}

/// The SQL's key order: src_ip, dst_ip, src_port, dst_port, protocol, vlan.
fn key_order(a: &FlowKey, b: &FlowKey) -> Ordering {
    (
        a.src_ip, a.dst_ip, a.src_port, a.dst_port, a.protocol, a.vlan,
    )
        .cmp(&(
            b.src_ip, b.dst_ip, b.src_port, b.dst_port, b.protocol, b.vlan,
        ))
}

fn keyed(k: FlowKey, a: &Agg, n: u64) -> KeyedRow {
    KeyedRow {
        key: k,
        a: a.c.packets,
        b: a.c.bytes,
        t1: a.c.first_seen,
        t2: a.c.last_seen,
        n,
    }
}

/// `sql::exact_top`: per key packets, bytes, first, last, distinct windows.
pub(crate) fn top(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
    by: Measure,
    limit: usize,
) -> rusqlite::Result<Vec<KeyedRow>> {
    let g = aggregate(conn, q, filter)?;
    let order = |x: usize, y: usize| {
        let (a, b) = (&g.aggs[x].c, &g.aggs[y].c);
        let measures = match by {
            Measure::Packets => (b.packets, b.bytes).cmp(&(a.packets, a.bytes)),
            Measure::Bytes => (b.bytes, b.packets).cmp(&(a.bytes, a.packets)),
        };
        measures.then_with(|| key_order(&g.keys[x], &g.keys[y]))
    };
    Ok(first_n(&g, limit, |_| true, order)
        .into_iter()
        .map(|i| keyed(g.keys[i], &g.aggs[i], g.aggs[i].windows))
        .collect())
}

/// `sql::exact_in_range`: keys whose packets (bytes) lie in `[lo, hi]`,
/// largest first; `n` counts rows.
pub(crate) fn in_range(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
    by: Measure,
    lo: Option<u64>,
    hi: Option<u64>,
    limit: usize,
) -> rusqlite::Result<Vec<KeyedRow>> {
    let measure = |a: &Agg| match by {
        Measure::Packets => a.c.packets,
        Measure::Bytes => a.c.bytes,
    };
    let g = aggregate(conn, q, filter)?;
    let keep = |a: &Agg| {
        let v = measure(a);
        lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi)
    };
    let order = |x: usize, y: usize| {
        measure(&g.aggs[y])
            .cmp(&measure(&g.aggs[x]))
            .then_with(|| key_order(&g.keys[x], &g.keys[y]))
    };
    Ok(first_n(&g, limit, keep, order)
        .into_iter()
        .map(|i| keyed(g.keys[i], &g.aggs[i], g.aggs[i].rows))
        .collect())
}

/// `sql::exact_totals`: first, last, packets, bytes, distinct keys.
pub(crate) fn totals(conn: &Connection, q: &Query, filter: &Filter) -> rusqlite::Result<NumberRow> {
    let g = aggregate(conn, q, filter)?;
    let mut n = NumberRow {
        t1: u64::MAX,
        t2: 0,
        a: 0,
        b: 0,
        n: g.aggs.len() as u64,
    };
    for a in &g.aggs {
        n.t1 = n.t1.min(a.c.first_seen);
        n.t2 = n.t2.max(a.c.last_seen);
        n.a += a.c.packets;
        n.b += a.c.bytes;
    }
    if g.aggs.is_empty() {
        n.t1 = 0;
    }
    Ok(n)
}

/// `sql::exact_trace`: first, last, packets, bytes, distinct windows.
pub(crate) fn trace(conn: &Connection, q: &Query, filter: &Filter) -> rusqlite::Result<NumberRow> {
    let mut n = NumberRow {
        t1: u64::MAX,
        t2: 0,
        a: 0,
        b: 0,
        n: 0,
    };
    let mut last_window = None;
    scan(conn, q, filter, |b| {
        for (_, c) in b.rows {
            n.t1 = n.t1.min(c.first_seen);
            n.t2 = n.t2.max(c.last_seen);
            n.a += c.packets;
            n.b += c.bytes;
        }
        if !b.rows.is_empty() && last_window != Some(b.start) {
            n.n += 1;
            last_window = Some(b.start);
        }
    })?;
    if n.n == 0 {
        n.t1 = 0;
    }
    Ok(n)
}

/// `sql::exact_series`: per window start, the latest end, packets, bytes
/// and distinct keys, oldest first, at most `limit` windows.
pub(crate) fn series(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
    limit: usize,
) -> rusqlite::Result<Vec<NumberRow>> {
    struct Window {
        row: NumberRow,
        source: Option<(i64, String)>,
        keys: Option<HashSet<FlowKey, Hasher>>,
        rows: Vec<FlowKey>,
    }
    let mut out: Vec<NumberRow> = Vec::new();
    let mut open: Option<Window> = None;
    let close = |w: Window, out: &mut Vec<NumberRow>| {
        let mut row = w.row;
        row.n = match w.keys {
            Some(k) => k.len() as u64,
            None => w.rows.len() as u64,
        };
        if row.n > 0 {
            out.push(row);
        }
    };
    scan(conn, q, filter, |b| {
        if open.as_ref().is_some_and(|w| w.row.t1 != b.start) {
            close(open.take().expect("open"), &mut out);
        }
        let w = open.get_or_insert_with(|| Window {
            row: NumberRow {
                t1: b.start,
                t2: 0,
                a: 0,
                b: 0,
                n: 0,
            },
            source: None,
            keys: None,
            rows: Vec::new(),
        });
        if b.rows.is_empty() {
            return;
        }
        w.row.t2 = w.row.t2.max(b.end);
        for (_, c) in b.rows {
            w.row.a += c.packets;
            w.row.b += c.bytes;
        }
        // One source's rows are distinct keys; more sources share keys.
        let same = match &w.source {
            None => {
                w.source = Some((b.run_id, b.engine_id.to_string()));
                true
            }
            Some((r, e)) => *r == b.run_id && e == b.engine_id,
        };
        if !same && w.keys.is_none() {
            let mut set = HashSet::with_hasher(Hasher::default());
            set.extend(w.rows.drain(..));
            w.keys = Some(set);
        }
        match &mut w.keys {
            Some(set) => set.extend(b.rows.iter().map(|(k, _)| *k)),
            None => w.rows.extend(b.rows.iter().map(|(k, _)| *k)),
        }
    })?;
    if let Some(w) = open.take() {
        close(w, &mut out);
    }
    out.truncate(limit);
    Ok(out)
}
