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
use std::collections::{HashMap, HashSet};

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

/// Runs the block query and hands every block's matching rows to `each`.
fn scan(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
    mut each: impl FnMut(&Block<'_>),
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(&q.text)?;
    let params = q.params.iter().map(|p| match p {
        Param::Int(v) => rusqlite::types::Value::Integer(*v),
        Param::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Param::Ip(ip) => rusqlite::types::Value::Blob(ip.to_vec()),
    });
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
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

/// Every matching key with its sums. The rows of one (run, engine,
/// window) are distinct keys, so when the scope holds only one such
/// source they are taken as they are, without a hash table.
fn aggregate(
    conn: &Connection,
    q: &Query,
    filter: &Filter,
) -> rusqlite::Result<Vec<(FlowKey, Agg)>> {
    let mut single: Option<(i64, String, u64)> = None;
    let mut many = false;
    let mut list: Vec<(FlowKey, Agg)> = Vec::new();
    let mut map: HashMap<FlowKey, Agg, Hasher> = HashMap::with_hasher(Hasher::default());
    scan(conn, q, filter, |b| {
        if !many {
            match &single {
                None => single = Some((b.run_id, b.engine_id.to_string(), b.start)),
                Some((r, e, s)) if *r == b.run_id && e == b.engine_id && *s == b.start => {}
                Some(_) => {
                    many = true;
                    map.reserve(list.len() + b.rows.len());
                    for (k, a) in list.drain(..) {
                        map.insert(k, a);
                    }
                }
            }
        }
        if many {
            map.reserve(b.rows.len());
            for (k, c) in b.rows {
                map.entry(*k)
                    .and_modify(|a| a.add(c, b.start))
                    .or_insert_with(|| Agg::new(c, b.start));
            }
        } else {
            list.extend(b.rows.iter().map(|(k, c)| (*k, Agg::new(c, b.start))));
        }
    })?;
    if many {
        list = map.into_iter().collect();
    }
    Ok(list)
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

/// The first `limit` of `rows` in `order`, sorted.
fn first_n<T>(mut rows: Vec<T>, limit: usize, order: impl Fn(&T, &T) -> Ordering) -> Vec<T> {
    if limit < rows.len() {
        if limit == 0 {
            return Vec::new();
        }
        rows.select_nth_unstable_by(limit - 1, &order);
        rows.truncate(limit);
    }
    rows.sort_unstable_by(order);
    rows
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
    let rows = aggregate(conn, q, filter)?;
    let order = |x: &(FlowKey, Agg), y: &(FlowKey, Agg)| {
        let (a, b) = (&x.1.c, &y.1.c);
        let measures = match by {
            Measure::Packets => (b.packets, b.bytes).cmp(&(a.packets, a.bytes)),
            Measure::Bytes => (b.bytes, b.packets).cmp(&(a.bytes, a.packets)),
        };
        measures.then_with(|| key_order(&x.0, &y.0))
    };
    Ok(first_n(rows, limit, order)
        .into_iter()
        .map(|(k, a)| keyed(k, &a, a.windows))
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
    let mut rows = aggregate(conn, q, filter)?;
    rows.retain(|(_, a)| {
        let v = measure(a);
        lo.is_none_or(|lo| v >= lo) && hi.is_none_or(|hi| v <= hi)
    });
    let order = |x: &(FlowKey, Agg), y: &(FlowKey, Agg)| {
        measure(&y.1)
            .cmp(&measure(&x.1))
            .then_with(|| key_order(&x.0, &y.0))
    };
    Ok(first_n(rows, limit, order)
        .into_iter()
        .map(|(k, a)| keyed(k, &a, a.rows))
        .collect())
}

/// `sql::exact_totals`: first, last, packets, bytes, distinct keys.
pub(crate) fn totals(conn: &Connection, q: &Query, filter: &Filter) -> rusqlite::Result<NumberRow> {
    let rows = aggregate(conn, q, filter)?;
    let mut n = NumberRow {
        t1: u64::MAX,
        t2: 0,
        a: 0,
        b: 0,
        n: rows.len() as u64,
    };
    for (_, a) in &rows {
        n.t1 = n.t1.min(a.c.first_seen);
        n.t2 = n.t2.max(a.c.last_seen);
        n.a += a.c.packets;
        n.b += a.c.bytes;
    }
    if rows.is_empty() {
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
