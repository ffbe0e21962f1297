//! The bus against a real nats-server (started per test by the testkit).

use netspectra_bus::{
    owned_shards, AckQueue, BatchLimits, Batcher, BusConfig, Consumer, ConsumerConfig, Dedupe,
    Delivery, Publisher, SealedBatch, Source,
};
use netspectra_model::{ip, PacketRecord, L3};
use netspectra_proto::wire;
use netspectra_testkit::nats::NatsServer;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

fn rec(src: u32, i: u64) -> PacketRecord {
    PacketRecord {
        l3: L3::Ipv4,
        ts_ns: 1_000 + i,
        src_ip: ip::from_v4(src.to_be_bytes()),
        dst_ip: ip::from_v4([10, 0, 0, 1]),
        src_port: 1000,
        dst_port: 443,
        protocol: 6,
        wire_len: 60 + (i % 100) as u32,
        cap_len: 60,
        ..Default::default()
    }
}

fn bus(url: &str, jetstream: bool, prefix: &str) -> BusConfig {
    BusConfig {
        prefix: prefix.into(),
        shards: 4,
        jetstream,
        ..BusConfig::new(url)
    }
}

fn consumer_cfg(bus: &BusConfig, shards: Vec<u32>) -> ConsumerConfig {
    ConsumerConfig {
        bus: bus.clone(),
        shards,
        interop_subject: None,
        ack_wait: Duration::from_secs(1),
        queue: 64,
    }
}

/// Sealed batches for `n` packets from 50 sources.
fn batches(n: u64) -> Vec<SealedBatch> {
    let limits = BatchLimits {
        max_packets: 100,
        ..Default::default()
    };
    let mut b = Batcher::new("probe-t", 4, limits, 1);
    let mut out: Vec<SealedBatch> = (0..n)
        .filter_map(|i| b.push(&rec((i % 50) as u32, i)))
        .collect();
    b.flush(&mut out);
    out
}

async fn recv(rx: &mut mpsc::Receiver<Delivery>, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_two_engines_split_the_shards_and_see_every_packet_once() {
    let server = NatsServer::start(false);
    let cfg = bus(&server.url(), false, "t1");
    let (c0, mut rx0) = Consumer::start(&consumer_cfg(&cfg, owned_shards(0, 2, 4)))
        .await
        .unwrap();
    let (c1, mut rx1) = Consumer::start(&consumer_cfg(&cfg, owned_shards(1, 2, 4)))
        .await
        .unwrap();
    let mut p = Publisher::connect(&cfg, "probe-t").await.unwrap();
    for b in batches(10_000) {
        p.publish(b).await.unwrap();
    }
    let stats = p.finish().await.unwrap();
    assert_eq!(stats.packets, 10_000);
    assert_eq!(
        stats.per_shard.iter().map(|s| s.packets).sum::<u64>(),
        10_000
    );
    let mut seen = [0u64; 2];
    let mut srcs: [std::collections::HashSet<ip::IpBytes>; 2] = Default::default();
    for (e, rx) in [&mut rx0, &mut rx1].into_iter().enumerate() {
        while let Some(d) = recv(rx, Duration::from_millis(500)).await {
            assert_eq!(d.source, Source::Batch);
            assert!(d.acker.is_none());
            let mut out = Vec::new();
            let h = wire::decode_batch(&d.payload, &mut out).unwrap();
            assert_eq!(h.shard % 2, e as u32, "engine {e} owns only its shards");
            seen[e] += out.len() as u64;
            srcs[e].extend(out.iter().map(|r| r.src_ip));
        }
    }
    assert_eq!(seen[0] + seen[1], 10_000);
    assert!(seen[0] > 0 && seen[1] > 0);
    assert!(srcs[0].is_disjoint(&srcs[1]), "a source is never split");
    assert_eq!(c0.counters().snapshot().2, 0, "no slow-consumer drops");
    drop((c0, c1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_drops_a_republished_batch_and_the_engine_skips_a_redelivered_one() {
    let server = NatsServer::start(true);
    let cfg = bus(&server.url(), true, "t2");
    let all = batches(1_000);
    let first = all[0].clone();
    let mut p = Publisher::connect(&cfg, "probe-t").await.unwrap();
    for b in &all {
        p.publish(b.clone()).await.unwrap();
    }
    // The same batch again (a probe retrying after a lost ack): same
    // Nats-Msg-Id, so the stream keeps one copy.
    p.publish(first.clone()).await.unwrap();
    let stats = p.finish().await.unwrap();
    assert_eq!(stats.duplicates, 1);

    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut stream = js.get_stream(cfg.stream_name()).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        all.len() as u64
    );

    // Consume everything without acking; after ack_wait (1 s) the server
    // redelivers. Dedupe applies each batch once.
    let (consumer, mut rx) = Consumer::start(&consumer_cfg(&cfg, (0..4).collect()))
        .await
        .unwrap();
    let mut dedupe = Dedupe::default();
    let (mut applied, mut deliveries) = (0u64, 0u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut ackers = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let Some(d) = recv(&mut rx, Duration::from_millis(300)).await else {
            continue;
        };
        deliveries += 1;
        let h = wire::decode_batch_header(&d.payload).unwrap();
        if dedupe.accept(h.probe_id, h.shard, h.seq) {
            applied += h.packets as u64;
        }
        ackers.push(d.acker.unwrap());
    }
    assert!(
        deliveries > all.len() as u64,
        "unacked batches were redelivered ({deliveries} deliveries)"
    );
    assert_eq!(applied, 1_000, "each packet applied once");
    assert!(dedupe.skipped() > 0);
    drop(consumer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_acks_wait_for_the_window_to_be_written() {
    let server = NatsServer::start(true);
    let cfg = bus(&server.url(), true, "t3");
    let mut p = Publisher::connect(&cfg, "probe-t").await.unwrap();
    let all = batches(1_000);
    for b in &all {
        p.publish(b.clone()).await.unwrap();
    }
    p.finish().await.unwrap();
    let ccfg = ConsumerConfig {
        ack_wait: Duration::from_secs(30),
        ..consumer_cfg(&cfg, (0..4).collect())
    };
    let (consumer, mut rx) = Consumer::start(&ccfg).await.unwrap();
    let (written_tx, written_rx) = watch::channel(0u64);
    let acks = AckQueue::spawn(written_rx, ccfg.ack_wait);
    let tx = acks.sender();
    // First half of the deliveries in window 0, the rest in window 1.
    let n = all.len();
    for i in 0..n {
        let d = recv(&mut rx, Duration::from_secs(5))
            .await
            .expect("a delivery");
        tx.send((u64::from(i >= n / 2), d.acker.unwrap())).unwrap();
    }
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream(cfg.stream_name()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ack_pending(&stream, &cfg).await,
        n,
        "nothing acked before a window is stored"
    );
    written_tx.send_replace(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ack_pending(&stream, &cfg).await,
        n - n / 2,
        "window 0's batches acked"
    );
    written_tx.send_replace(u64::MAX);
    drop(tx);
    let stats = acks.finish().await;
    assert_eq!(stats.acked, n as u64);
    assert_eq!(stats.unacked, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ack_pending(&stream, &cfg).await, 0);
    drop(consumer);
}

async fn ack_pending(stream: &async_nats::jetstream::stream::Stream, cfg: &BusConfig) -> usize {
    let mut total = 0;
    for s in 0..4 {
        let info = stream.consumer_info(cfg.consumer_name(s)).await.unwrap();
        total += info.num_ack_pending;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_dead_leader_is_replaced_within_its_lease() {
    use netspectra_bus::lease::{Fence, Leadership, LeaseBucket};
    use std::time::Instant;
    let nats = NatsServer::start(true);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let ttl = Duration::from_secs(1);
    let bucket = LeaseBucket::open(&js, "TEST_LEADERS", ttl).await.unwrap();
    let a = Leadership::spawn(bucket.clone(), "alerter", "a");
    let b = Leadership::spawn(bucket.clone(), "alerter", "b");
    let both = |a: &Leadership, b: &Leadership| (a.token(), b.token());
    let deadline = Instant::now() + Duration::from_secs(5);
    let (leader, other, first) = loop {
        match both(&a, &b) {
            (Some(_), Some(_)) => panic!("two leaders at once"),
            (Some(t), None) => break (a, b, t),
            (None, Some(t)) => break (b, a, t),
            (None, None) => {
                assert!(Instant::now() < deadline, "no leader elected");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Held across renewals, by one only.
    for _ in 0..50 {
        assert_eq!(leader.token(), Some(first));
        assert_eq!(other.token(), None);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holder = bucket.holder("alerter").await.unwrap().unwrap();
    // The leader dies without releasing: the other takes over after the
    // lease expires, within two TTLs.
    let killed = Instant::now();
    leader.abandon();
    let second = loop {
        if let Some(t) = other.token() {
            break t;
        }
        assert!(killed.elapsed() < ttl * 2, "no takeover within two TTLs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        killed.elapsed() >= ttl / 2,
        "not before the old lease could expire"
    );
    assert!(second > first, "fencing tokens grow: {first} then {second}");
    assert_ne!(bucket.holder("alerter").await.unwrap().unwrap(), holder);
    let fence = Fence::default();
    assert!(fence.admit(second));
    assert!(
        !fence.admit(first),
        "the old leader's late write is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_id_in_use_is_refused_and_members_are_listed() {
    use netspectra_bus::cluster::{open_bucket, Membership};
    let nats = NatsServer::start(true);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let cfg = bus(&nats.url(), true, "members");
    let bucket = open_bucket(&client, &cfg, Duration::from_secs(2))
        .await
        .unwrap();
    let a = Membership::join(bucket.clone(), "host-1").await.unwrap();
    let _b = Membership::join(bucket.clone(), "host/2").await.unwrap();
    let err = Membership::join(bucket.clone(), "host-1")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("'host-1' is in use"), "{err}");
    assert_eq!(a.members().await.unwrap(), vec!["host-1", "host/2"]);
    // Shard leases: one holder; renewed in the background past the TTL.
    assert!(a.try_take(3).await.unwrap());
    assert!(!_b.try_take(3).await.unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(a.held(), vec![3]);
    assert!(a.lost().is_empty());
    assert!(!_b.try_take(3).await.unwrap(), "still held after a TTL");
    a.give_back(3).await.unwrap();
    assert!(_b.try_take(3).await.unwrap(), "free once given back");
    a.leave().await.unwrap();
    let c = Membership::join(bucket, "host-1").await.unwrap();
    assert_eq!(c.members().await.unwrap(), vec!["host-1", "host/2"]);
}

/// Listing members must not wait on KV entries replaced meanwhile: every
/// lease is rewritten four times per TTL, and a listing that stalls stalls
/// the engine's heartbeat, hence its consuming and every handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_promptly_while_every_lease_is_renewed() {
    use netspectra_bus::cluster::{open_bucket, Membership};
    use std::time::Instant;
    let nats = NatsServer::start(true);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let cfg = bus(&nats.url(), true, "busy");
    let ttl = Duration::from_millis(400);
    let bucket = open_bucket(&client, &cfg, ttl).await.unwrap();
    let ids = ["a", "b", "c"];
    let mut members = Vec::new();
    for id in ids {
        members.push(Membership::join(bucket.clone(), id).await.unwrap());
    }
    for shard in 0..48 {
        assert!(members[shard as usize % 3].try_take(shard).await.unwrap());
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(members[0].members().await.unwrap(), ids);
        slowest = slowest.max(started.elapsed());
    }
    // A stalled listing waits for the client's idle heartbeat (5 s).
    assert!(slowest < ttl * 2, "slowest listing: {slowest:?}");
}
