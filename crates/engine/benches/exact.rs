//! Per-packet cost of exact accounting (DESIGN §11 target: ≤ 50 ns per map
//! update with 1 M keys).

use divan::{black_box, Bencher};
use netspectra_engine::ExactTable;
use netspectra_model::{ip, Dimension, PacketRecord, L3};

fn main() {
    divan::main();
}

fn records(keys: u32, n: usize) -> Vec<PacketRecord> {
    let mut x: u64 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = (x % u64::from(keys)) as u32;
            PacketRecord {
                ts_ns: x >> 20,
                src_ip: ip::from_v4(k.to_be_bytes()),
                dst_ip: ip::from_v4([10, 0, 0, (k % 7) as u8]),
                src_port: (k % 60_000) as u16,
                dst_port: 443,
                protocol: 6,
                wire_len: 100,
                l3: L3::Ipv4,
                ..Default::default()
            }
        })
        .collect()
}

/// The default per-flow task's key.
fn five_tuple() -> Vec<Dimension> {
    vec![
        Dimension::SrcIp,
        Dimension::DstIp,
        Dimension::SrcPort,
        Dimension::DstPort,
        Dimension::Protocol,
    ]
}

/// One update into a table that already holds `keys` keys (steady state).
#[divan::bench(args = [1_000, 100_000, 1_000_000])]
fn exact_update_per_src(bencher: Bencher, keys: u32) {
    let recs = records(keys, 1 << 20);
    let mut table = ExactTable::new(vec![Dimension::SrcIp]);
    for r in &recs {
        table.update(r);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        table.update(black_box(&recs[i & ((1 << 20) - 1)]));
        i += 1;
    });
}

/// The engine's path: batches of 1024 records with prefetching.
#[divan::bench(args = [1_000, 100_000, 1_000_000])]
fn exact_update_batched_per_src(bencher: Bencher, keys: u32) {
    batched(bencher, keys, vec![Dimension::SrcIp]);
}

/// The engine's path for the default 5-tuple task.
#[divan::bench(args = [1_000_000])]
fn exact_update_batched_per_flow(bencher: Bencher, keys: u32) {
    batched(bencher, keys, five_tuple());
}

fn batched(bencher: Bencher, keys: u32, dims: Vec<Dimension>) {
    const BATCH: usize = 1024;
    let recs = records(keys, 1 << 20);
    let mut table = ExactTable::new(dims);
    table.update_all(recs.iter());
    let mut i = 0;
    bencher
        .counter(divan::counter::ItemsCount::new(BATCH))
        .bench_local(|| {
            let start = (i * BATCH) & ((1 << 20) - 1);
            table.update_all(black_box(&recs[start..start + BATCH]).iter());
            i += 1;
        });
}

/// The default 5-tuple task, one record at a time.
#[divan::bench(args = [1_000_000])]
fn exact_update_per_flow(bencher: Bencher, keys: u32) {
    let recs = records(keys, 1 << 20);
    let mut table = ExactTable::new(five_tuple());
    for r in &recs {
        table.update(r);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        table.update(black_box(&recs[i & ((1 << 20) - 1)]));
        i += 1;
    });
}

/// A window's table from empty: 2^20 records over 1 M keys (about 660 k
/// of them distinct) counted into a fresh table, so the time per record
/// includes the table's growth (doubling from 64 slots, fresh pages
/// and all), which the steady-state benches above leave out.
#[divan::bench]
fn exact_fill_fresh_table_per_flow(bencher: Bencher) {
    const N: usize = 1 << 20;
    let recs = records(1_000_000, N);
    bencher
        .counter(divan::counter::ItemsCount::new(N))
        .with_inputs(|| ExactTable::new(five_tuple()))
        .bench_local_values(|mut table| {
            for chunk in recs.chunks(1024) {
                table.update_all(black_box(chunk).iter());
            }
            table
        });
}
