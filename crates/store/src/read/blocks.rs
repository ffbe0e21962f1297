//! The exact-row questions on SQLite, answered in Rust over a streaming
//! scan of the blocks in scope (`crate::block`): SQLite selects the blocks
//! (task, runs, window range, through the index on `window_start`), each is
//! decoded row by row, the key filter is applied to its rows and they are
//! folded into the answer. The answers are those of the SQL in `sql.rs`
//! (which ClickHouse still runs): same sums, same distinct counts, same
//! order and ties.
//!
//! Grouping a whole history (a million rows) is bound by memory: keys are
//! coded in 128 bits and each key's sums kept in one 64-byte entry behind a
//! table of 8-byte slots, looked up a batch at a time with prefetching, so
//! a cold question touches about half the fresh memory it did with
//! full keys, and rarely waits on more than one cache miss per row.

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
    let mut stmt = conn.prepare_cached(&q.text)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(q.params.iter().map(value)))?;
    let mut buf = Vec::new();
    let unsigned = |v: i64| v.max(0) as u64;
    while let Some(r) = rows.next()? {
        let data = r.get_ref(4)?.as_blob()?;
        let columns = block::decode(data, &mut buf).map_err(damaged)?;
        if !is_empty(filter) {
            buf.retain(|(k, _)| matches(filter, columns, k));
        }
        each(&Block {
            run_id: r.get(0)?,
            engine_id: r.get_ref(1)?.as_str()?,
            start: unsigned(r.get(2)?),
            end: unsigned(r.get(3)?),
            rows: &buf,
        });
    }
    Ok(())
}

/// [`scan`], row by row without laying blocks out in memory (the grouping
/// path): `each` gets the ordinal of the row's window among the windows
/// scanned so far (blocks come in window order, so one window's blocks
/// share it), its key and its counters.
fn scan_rows(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
    mut each: impl FnMut(u32, &FlowKey, &FlowCounters),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(&q.text)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(q.params.iter().map(value)))?;
    let (mut window, mut last_start) = (0u32, None);
    let everything = is_empty(filter);
    while let Some(r) = rows.next()? {
        let start: i64 = r.get(2)?;
        if last_start != Some(start) {
            if last_start.is_some() {
                window += 1;
            }
            last_start = Some(start);
        }
        let data = r.get_ref(4)?.as_blob()?;
        let decoded = if everything {
            block::visit(data, |k, c| each(window, k, c))
        } else {
            // The block's header names its columns, before its rows.
            let columns = block::columns(data).map_err(damaged)?;
            block::visit(data, |k, c| {
                if matches(filter, columns, k) {
                    each(window, k, c)
                }
            })
        };
        decoded.map_err(damaged)?;
    }
    Ok(())
}

fn damaged(e: block::Damaged) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Blob, Box::new(e))
}

/// A key in 128 bits, so a group's entry with its sums fits in one cache
/// line: each address is 32 bits, an IPv4 address itself or (flagged) the
/// index of an address interned in [`Codes`] (IPv6, or zero when the key
/// lacks it), then ports, protocol and VLAN. Codes are assigned by the one
/// thread that reads the blocks, so equal keys have equal codes across
/// grouping threads.
type Code = u128;

const SRC_INTERNED: Code = 1 << 120;
const DST_INTERNED: Code = 1 << 121;

/// The interned addresses behind [`Code`]s.
#[derive(Default)]
struct Codes {
    index: hashbrown::HashMap<[u8; 16], u32, Hasher>,
    addresses: Vec<[u8; 16]>,
}

impl Codes {
    /// An address's 32 bits and whether they index an interned address.
    #[inline]
    fn address(&mut self, a: &[u8; 16]) -> (u32, bool) {
        if netspectra_model::ip::is_v4(a) {
            (u32::from_be_bytes([a[12], a[13], a[14], a[15]]), false)
        } else {
            (self.intern(a), true)
        }
    }

    #[cold]
    fn intern(&mut self, a: &[u8; 16]) -> u32 {
        let next = self.addresses.len() as u32;
        let i = *self.index.entry(*a).or_insert(next);
        if i == next {
            self.addresses.push(*a);
        }
        i
    }

    #[inline]
    fn code(&mut self, k: &FlowKey) -> Code {
        let (src, src_interned) = self.address(&k.src_ip);
        let (dst, dst_interned) = self.address(&k.dst_ip);
        Code::from(src)
            | Code::from(dst) << 32
            | Code::from(k.src_port) << 64
            | Code::from(k.dst_port) << 80
            | Code::from(k.protocol) << 96
            | Code::from(k.vlan) << 104
            | if src_interned { SRC_INTERNED } else { 0 }
            | if dst_interned { DST_INTERNED } else { 0 }
    }

    fn key(&self, code: Code) -> FlowKey {
        let address = |bits: u32, interned: bool| {
            if interned {
                self.addresses[bits as usize]
            } else {
                netspectra_model::ip::from_v4(bits.to_be_bytes())
            }
        };
        FlowKey {
            src_ip: address(code as u32, code & SRC_INTERNED != 0),
            dst_ip: address((code >> 32) as u32, code & DST_INTERNED != 0),
            src_port: (code >> 64) as u16,
            dst_port: (code >> 80) as u16,
            protocol: (code >> 96) as u8,
            vlan: (code >> 104) as u16,
        }
    }
}

/// Hints the CPU to bring the cache line holding `p` in: a batch issues
/// its rows' table loads ahead, so their misses overlap (the engine's flow
/// table does the same, `netspectra_sketch::prefetch`).
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 has no architectural effect: it cannot fault and
    // does not modify memory, for any address; SSE is part of the x86_64
    // baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline]
fn hash(code: Code) -> u64 {
    use std::hash::BuildHasher as _;
    Hasher::default().hash_one(code)
}

/// One key's sums: packets, bytes, first seen, last seen, distinct
/// windows and rows. One cache line, so folding a row into a key seen
/// before costs one random access besides the table's slot. Counts are
/// 32-bit: [`aggregate`] refuses a scope of more than `u32::MAX` rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    code: Code,
    c: FlowCounters,
    windows: u32,
    rows: u32,
    last_window: u32,
}

impl Entry {
    #[inline]
    fn new(code: Code, c: &FlowCounters, window: u32) -> Entry {
        Entry {
            code,
            c: *c,
            windows: 1,
            rows: 1,
            last_window: window,
        }
    }

    #[inline]
    fn add(&mut self, c: &FlowCounters, window: u32) {
        self.c.merge(c);
        self.rows += 1;
        if self.last_window != window {
            self.windows += 1;
            self.last_window = window;
        }
    }
}

/// A row on its way to a grouping table.
#[derive(Clone, Copy)]
struct Row {
    code: Code,
    c: FlowCounters,
}

/// Rows a reader hands a table at once: a table looks a batch's slots up
/// ahead of folding each row in, so the cache misses overlap.
const BATCH: usize = 4096;

/// How far ahead a batch prefetches a row's slot, and its entry.
const AHEAD_SLOT: usize = 16;
const AHEAD_ENTRY: usize = 8;

/// Groups rows by key: open addressing with linear probing over 8-byte
/// slots (32 bits of the hash beside the entry's index, so a probe rarely
/// reads an entry that is not its key's), entries in first-seen order.
/// Slots are at most three quarters full (a probe scans a run of slots in
/// one or two cache lines).
struct Table {
    slots: Vec<u64>,
    mask: usize,
    entries: Vec<Entry>,
    hashes: Vec<u64>,
}

/// `n` empty slots. Written, not merely allocated zeroed: a zeroed
/// allocation's pages fault twice, mapped on the first read and copied on
/// the first write.
#[allow(clippy::slow_vector_initialization)]
fn empty_slots(n: usize) -> Vec<u64> {
    let mut slots = Vec::with_capacity(n);
    slots.resize(n, 0);
    slots
}

/// The most keys a table is sized for up front. Its size comes from the
/// rows in scope, and a question over many windows has far fewer keys than
/// rows (a day of 60 s windows of 185 k sources: 266 M rows, 185 k keys);
/// past this the table grows as keys arrive.
const MAX_PRESIZED_KEYS: usize = 1 << 20;

impl Table {
    /// A table for about `keys` keys (at most [`MAX_PRESIZED_KEYS`])
    /// without growing.
    fn with_capacity(keys: usize) -> Table {
        let keys = keys.min(MAX_PRESIZED_KEYS);
        let slots = empty_slots((keys.max(8) * 4 / 3 + 1).next_power_of_two());
        Table {
            mask: slots.len() - 1,
            slots,
            entries: Vec::with_capacity(keys),
            hashes: Vec::with_capacity(BATCH),
        }
    }

    /// Folds `rows`, all of the window with ordinal `window`, in.
    fn add(&mut self, rows: &[Row], window: u32) {
        let mut hashes = std::mem::take(&mut self.hashes);
        hashes.clear();
        hashes.extend(rows.iter().map(|r| hash(r.code)));
        for (i, r) in rows.iter().enumerate() {
            if let Some(&h) = hashes.get(i + AHEAD_SLOT) {
                prefetch(self.slots.as_ptr().wrapping_add(h as usize & self.mask));
            }
            if let Some(&h) = hashes.get(i + AHEAD_ENTRY) {
                let s = self.slots[h as usize & self.mask];
                if s != 0 {
                    prefetch(self.entries.as_ptr().wrapping_add((s as u32 - 1) as usize));
                }
            }
            self.add_one(hashes[i], r, window);
        }
        self.hashes = hashes;
    }

    #[inline]
    fn add_one(&mut self, h: u64, r: &Row, window: u32) {
        if self.entries.len() >= self.slots.len() / 4 * 3 {
            self.grow();
        }
        let tag = h >> 32;
        let mut at = h as usize & self.mask;
        loop {
            let s = self.slots[at];
            if s == 0 {
                self.entries.push(Entry::new(r.code, &r.c, window));
                self.slots[at] = tag << 32 | self.entries.len() as u64;
                return;
            }
            if s >> 32 == tag {
                let e = &mut self.entries[(s as u32 - 1) as usize];
                if e.code == r.code {
                    e.add(&r.c, window);
                    return;
                }
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Twice the slots (an estimate fell short).
    #[cold]
    fn grow(&mut self) {
        self.slots = empty_slots(self.slots.len() * 2);
        self.mask = self.slots.len() - 1;
        for (i, e) in self.entries.iter().enumerate() {
            let h = hash(e.code);
            let mut at = h as usize & self.mask;
            while self.slots[at] != 0 {
                at = (at + 1) & self.mask;
            }
            self.slots[at] = (h >> 32) << 32 | (i as u64 + 1);
        }
    }
}

/// Every matching key with its sums, in one or more parts of distinct
/// keys, and the interned addresses their codes refer to.
struct Groups {
    parts: Vec<Vec<Entry>>,
    codes: Codes,
}

impl Groups {
    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.parts.iter().flatten()
    }
}

/// Above this many rows a scan groups on two threads, each owning the keys
/// of one half of the hash space (so their groups never overlap), while
/// the calling thread reads and decodes the blocks and codes the keys.
const PARALLEL_ROWS: usize = 200_000;

/// Batches of rows for one table: rows of one window, handed over when
/// full or when the window changes.
struct Batcher {
    rows: Vec<Row>,
    window: u32,
}

impl Batcher {
    fn new() -> Batcher {
        Batcher {
            rows: Vec::with_capacity(BATCH),
            window: 0,
        }
    }

    /// Adds a row; hands the batch to `full` first when it is full or of
    /// another window.
    #[inline]
    fn push(&mut self, window: u32, r: Row, full: impl FnOnce(&mut Vec<Row>, u32)) {
        if self.rows.len() == BATCH || (self.window != window && !self.rows.is_empty()) {
            full(&mut self.rows, self.window);
            self.rows.clear();
        }
        self.window = window;
        self.rows.push(r);
    }
}

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
    if rows >= u32::MAX as usize {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            format!("{rows} rows in scope: more than one question can group").into(),
        ));
    }
    let mut codes = Codes::default();
    if sources <= 1 {
        let mut list = Vec::with_capacity(rows);
        scan_rows(conn, q, filter, |w, k, c| {
            list.push(Entry::new(codes.code(k), c, w))
        })?;
        return Ok(Groups {
            parts: vec![list],
            codes,
        });
    }
    if rows < PARALLEL_ROWS {
        let mut table = Table::with_capacity(rows);
        let mut batch = Batcher::new();
        scan_rows(conn, q, filter, |w, k, c| {
            let r = Row {
                code: codes.code(k),
                c: *c,
            };
            batch.push(w, r, |rows, w| table.add(rows, w));
        })?;
        table.add(&batch.rows, batch.window);
        return Ok(Groups {
            parts: vec![table.entries],
            codes,
        });
    }
    type Batch = (Vec<Row>, u32);
    std::thread::scope(|s| {
        let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<Row>>();
        let mut halves = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
            let recycle = recycle_tx.clone();
            senders.push(tx);
            halves.push(s.spawn(move || {
                let mut t = Table::with_capacity(rows / 2 + rows / 16);
                for (b, w) in rx {
                    t.add(&b, w);
                    let _ = recycle.send(b);
                }
                t.entries
            }));
        }
        drop(recycle_tx);
        let mut batches = [Batcher::new(), Batcher::new()];
        let send = |half: usize, rows: &mut Vec<Row>, w: u32| {
            // The batch goes as it is; the next fills a spare one.
            let spare = recycle_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(BATCH));
            let _ = senders[half].send((std::mem::replace(rows, spare), w));
        };
        let scanned = scan_rows(conn, q, filter, |w, k, c| {
            let code = codes.code(k);
            // The top bit: neither a table's slot index nor its tag's
            // comparison depends on it.
            let half = (hash(code) >> 63) as usize;
            batches[half].push(w, Row { code, c: *c }, |rows, w| send(half, rows, w));
        });
        for (half, b) in batches.iter_mut().enumerate() {
            let w = b.window;
            send(half, &mut b.rows, w);
        }
        drop(senders);
        let parts = halves
            .into_iter()
            .map(|h| h.join().expect("grouping thread"))
            .collect();
        scanned.map(|()| Groups { parts, codes })
    })
}

/// The first `limit` groups in `order`, sorted. A small limit keeps a
/// sorted list of the best so far while reading the sums in memory order;
/// a large one sorts.
fn first_n(
    groups: &Groups,
    limit: usize,
    keep: impl Fn(&Entry) -> bool,
    order: impl Fn(&Entry, &Entry) -> Ordering,
) -> Vec<&Entry> {
    let candidates = groups.iter().filter(|e| keep(e));
    if limit <= 4096 {
        let mut best: Vec<&Entry> = Vec::with_capacity(limit + 1);
        for e in candidates {
            if best.len() == limit {
                match best.last() {
                    Some(worst) if order(e, worst) == Ordering::Less => {}
                    _ => continue,
                }
            }
            let at = best.partition_point(|j| order(j, e) == Ordering::Less);
            best.insert(at, e);
            best.truncate(limit);
        }
        return best;
    }
    let mut all: Vec<&Entry> = candidates.collect();
    if limit < all.len() {
        all.select_nth_unstable_by(limit - 1, |a, b| order(a, b));
        all.truncate(limit);
    }
    all.sort_unstable_by(|a, b| order(a, b));
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

fn keyed(g: &Groups, e: &Entry, n: u32) -> KeyedRow {
    KeyedRow {
        key: g.codes.key(e.code),
        a: e.c.packets,
        b: e.c.bytes,
        t1: e.c.first_seen,
        t2: e.c.last_seen,
        n: u64::from(n),
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
    let order = |x: &Entry, y: &Entry| {
        let (a, b) = (&x.c, &y.c);
        let measures = match by {
            Measure::Packets => (b.packets, b.bytes).cmp(&(a.packets, a.bytes)),
            Measure::Bytes => (b.bytes, b.packets).cmp(&(a.bytes, a.packets)),
        };
        measures.then_with(|| key_order(&g.codes.key(x.code), &g.codes.key(y.code)))
    };
    Ok(first_n(&g, limit, |_| true, order)
        .into_iter()
        .map(|e| keyed(&g, e, e.windows))
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
    let measure = |e: &Entry| match by {
        Measure::Packets => e.c.packets,
        Measure::Bytes => e.c.bytes,
    };
    let g = aggregate(conn, q, filter)?;
    let keep = |e: &Entry| {
        let v = measure(e);
        lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi)
    };
    let order = |x: &Entry, y: &Entry| {
        measure(y)
            .cmp(&measure(x))
            .then_with(|| key_order(&g.codes.key(x.code), &g.codes.key(y.code)))
    };
    Ok(first_n(&g, limit, keep, order)
        .into_iter()
        .map(|e| keyed(&g, e, e.rows))
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
        n: 0,
    };
    for e in g.iter() {
        n.t1 = n.t1.min(e.c.first_seen);
        n.t2 = n.t2.max(e.c.last_seen);
        n.a += e.c.packets;
        n.b += e.c.bytes;
        n.n += 1;
    }
    if n.n == 0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A table sized far too small (as one capped at
    /// [`MAX_PRESIZED_KEYS`] is for a long history) grows and still sums
    /// every key as a map does.
    #[test]
    fn a_table_that_grows_sums_like_a_map() {
        let mut table = Table::with_capacity(1);
        let mut model: HashMap<Code, (u64, u64, u32)> = HashMap::new();
        for window in 0..5u32 {
            let rows: Vec<Row> = (0..20_000u64)
                .filter(|n| (n + u64::from(window)).is_multiple_of(3) || *n < 500)
                .map(|n| Row {
                    code: Code::from(n) << 40 | Code::from(n % 7),
                    c: FlowCounters::one(n + u64::from(window), (n % 1500) as u32),
                })
                .collect();
            for r in &rows {
                let e = model.entry(r.code).or_default();
                e.0 += r.c.packets;
                e.1 += r.c.bytes;
                e.2 += 1;
            }
            for batch in rows.chunks(BATCH) {
                table.add(batch, window);
            }
        }
        assert!(table.slots.len() > 8, "the table grew");
        assert_eq!(table.entries.len(), model.len());
        for e in &table.entries {
            let want = model[&e.code];
            assert_eq!((e.c.packets, e.c.bytes, e.rows), (want.0, want.1, want.2));
        }
        let windows: u32 = table.entries.iter().map(|e| e.windows).sum();
        let want_windows: u32 = (0..20_000u64)
            .map(|n| {
                (0..5u64)
                    .filter(|w| (n + w).is_multiple_of(3) || n < 500)
                    .count() as u32
            })
            .sum();
        assert_eq!(windows, want_windows);
    }
}
