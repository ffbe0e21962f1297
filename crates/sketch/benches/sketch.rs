//! ns per insert / query for the three sketches (divan).
#![allow(missing_docs)]

use divan::{black_box, Bencher};
use netspectra_sketch::hash::{hash_bytes, mix};
use netspectra_sketch::rng::SplitMix64;
use netspectra_sketch::{
    CountMin, CountMinParams, HeavyBucket, HeavyBucketParams, SuperSpread, SuperSpreadParams,
};

fn main() {
    println!(
        "memory_bytes (defaults, 40-byte key): CountMin {} | HeavyBucket {} | SuperSpread {} | SuperSpread m=128 {}",
        CountMin::<Key>::new(CountMinParams::default()).memory_bytes(),
        HeavyBucket::<Key>::new(HeavyBucketParams::default()).memory_bytes(),
        SuperSpread::<Key>::new(SuperSpreadParams::default()).memory_bytes(),
        ss(128).memory_bytes(),
    );
    divan::main();
}

/// 40-byte key, like the engine's.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Key([u64; 5]);

const N: usize = 1 << 16;

/// Skewed stream: (key, key hash, elem hash, bytes); 1/8 of packets from 16 heavy keys.
fn stream() -> Vec<(Key, u64, u64, u64)> {
    let mut rng = SplitMix64::new(1);
    (0..N)
        .map(|_| {
            let r = rng.next_u64();
            let id = if r.is_multiple_of(8) {
                r % 16
            } else {
                r % 200_000
            };
            let k = Key([id, 1, 2, 3, 4]);
            let kh = hash_bytes(&id.to_le_bytes(), 7);
            (k, kh, mix(rng.next_u64(), 3), 40 + r % 1400)
        })
        .collect()
}

fn cm(conservative: bool) -> CountMin<Key> {
    CountMin::new(CountMinParams {
        width: 1 << 16,
        depth: 4,
        conservative,
        top_k: 64,
        seed: 1,
    })
}

#[divan::bench(args = [false, true], sample_count = 100, sample_size = 2000)]
fn countmin_insert(bencher: Bencher, conservative: bool) {
    let s = stream();
    let mut sk = cm(conservative);
    for &(k, h, _, b) in &s {
        sk.insert(k, h, b);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        let (k, h, _, b) = s[i & (N - 1)];
        i += 1;
        sk.insert(k, h, b);
    });
}

#[divan::bench(sample_count = 100, sample_size = 2000)]
fn countmin_query(bencher: Bencher) {
    let s = stream();
    let mut sk = cm(true);
    for &(k, h, _, b) in &s {
        sk.insert(k, h, b);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        i += 1;
        black_box(sk.estimate(s[i & (N - 1)].1))
    });
}

fn hb() -> HeavyBucket<Key> {
    HeavyBucket::new(HeavyBucketParams {
        width: 1 << 15,
        depth: 2,
        seed: 1,
    })
}

#[divan::bench(sample_count = 100, sample_size = 2000)]
fn heavy_insert(bencher: Bencher) {
    let s = stream();
    let mut sk = hb();
    for &(k, h, _, b) in &s {
        sk.insert(k, h, b);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        let (k, h, _, b) = s[i & (N - 1)];
        i += 1;
        sk.insert(k, h, b);
    });
}

#[divan::bench(sample_count = 100, sample_size = 2000)]
fn heavy_query(bencher: Bencher) {
    let s = stream();
    let mut sk = hb();
    for &(k, h, _, b) in &s {
        sk.insert(k, h, b);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        i += 1;
        let (k, h, _, _) = s[i & (N - 1)];
        black_box(sk.query(h, k))
    });
}

fn ss(m: usize) -> SuperSpread<Key> {
    SuperSpread::new(SuperSpreadParams {
        width: 1 << 15,
        depth: 2,
        m,
        size: 5,
        seed: 1,
        ..SuperSpreadParams::default()
    })
}

#[divan::bench(args = [128, 512], sample_count = 100, sample_size = 2000)]
fn superspread_insert(bencher: Bencher, m: usize) {
    let s = stream();
    let mut sk = ss(m);
    sk.reset(); // touches every page
    let mut i = 0;
    bencher.bench_local(|| {
        let (k, h, e, _) = s[i & (N - 1)];
        i += 1;
        // fresh element most of the time (elem hash varies with the lap)
        sk.insert(k, h, e ^ (i >> 16) as u64);
    });
}

#[divan::bench(sample_count = 100, sample_size = 2000)]
fn superspread_query(bencher: Bencher) {
    let s = stream();
    let mut sk = ss(128);
    for &(k, h, e, _) in &s {
        sk.insert(k, h, e);
    }
    let mut i = 0;
    bencher.bench_local(|| {
        i += 1;
        let (k, h, _, _) = s[i & (N - 1)];
        black_box(sk.query(k, h))
    });
}

/// How the engine inserts: a batch of 1024 pre-hashed packets, each sketch
/// prefetching the packet 8 ahead. Reported per packet.
#[divan::bench(args = [128, 512], sample_count = 100)]
fn superspread_insert_prefetched(bencher: Bencher, m: usize) {
    const BATCH: usize = 1024;
    const AHEAD: usize = 8;
    let s = stream();
    let mut sk = ss(m);
    sk.reset();
    let mut lap = 0usize;
    bencher
        .counter(divan::counter::ItemsCount::new(BATCH))
        .bench_local(|| {
            let start = (lap * BATCH) & (N - 1);
            let salt = (lap >> 6) as u64;
            lap += 1;
            let batch = &s[start..start + BATCH];
            for (j, &(k, h, e, _)) in batch.iter().enumerate() {
                if let Some(&(_, h2, e2, _)) = batch.get(j + AHEAD) {
                    sk.prefetch(h2, e2 ^ salt);
                }
                sk.insert(k, h, e ^ salt);
            }
        });
}

/// Count-Min the engine's way (see `superspread_insert_prefetched`).
#[divan::bench(sample_count = 100)]
fn countmin_insert_prefetched(bencher: Bencher) {
    const BATCH: usize = 1024;
    const AHEAD: usize = 8;
    let s = stream();
    let mut sk = cm(true);
    let mut lap = 0usize;
    bencher
        .counter(divan::counter::ItemsCount::new(BATCH))
        .bench_local(|| {
            let start = (lap * BATCH) & (N - 1);
            lap += 1;
            let batch = &s[start..start + BATCH];
            for (j, &(k, h, _, w)) in batch.iter().enumerate() {
                if let Some(&(_, h2, _, _)) = batch.get(j + AHEAD) {
                    sk.prefetch(h2);
                }
                sk.insert(k, h, w);
            }
        });
}
