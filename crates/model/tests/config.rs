//! Configuration loading: Go2NetSpectra compatibility, errors that name the key,
//! environment expansion inside string values only.

use netspectra_model::config::{Config, ConfigError, SketchAlgorithm, TaskGroup};
use netspectra_model::Dimension;
use std::collections::HashMap;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn err(yaml: &str) -> String {
    Config::from_yaml(yaml, &|_| None).unwrap_err().to_string()
}

#[test]
fn go2netspectra_config_loads_as_is() {
    let text = include_str!("data/go2netspectra-config.yaml");
    let vars = [
        "API_GRPC_LISTEN_ADDR",
        "API_HTTP_LISTEN_ADDR",
        "AI_API_KEY",
        "AI_GRPC_LISTEN_ADDR",
        "NATS_URL",
        "ALERTER_AI_SERVICE_ADDR",
        "SMTP_HOST",
        "SMTP_USER",
        "SMTP_PASSWORD",
        "SMTP_FROM",
        "SMTP_TO",
        "CLICKHOUSE_HOST",
        "CLICKHOUSE_DB",
        "CLICKHOUSE_USERNAME",
        "CLICKHOUSE_PASSWORD",
    ];
    // Without any of them it loads too: each unset variable is one warning,
    // and the ClickHouse writer it enables is named as not used.
    let bare = Config::from_yaml(text, &env(&[])).unwrap();
    let warnings = bare.warnings();
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.starts_with("environment variable"))
            .count(),
        vars.len() + 2,
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().any(|w| w
            .contains("aggregator.exact.writers[1] (type clickhouse) is not used")
            && w.contains("store.url: clickhouse://")),
        "{warnings:#?}"
    );
    let mut pairs: Vec<(&str, &str)> = vars.iter().map(|v| (*v, "x")).collect();
    pairs.push(("SMTP_PORT", "587"));
    pairs.push(("CLICKHOUSE_PORT", "9000"));
    pairs.push(("SMTP_PASSWORD", "pa$$:{word}"));
    let cfg = Config::from_yaml(text, &env(&pairs)).unwrap();
    assert_eq!(cfg.aggregator.period.0, 720 * 3600 * 1_000_000_000);
    assert_eq!(cfg.aggregator.num_workers, 16);
    assert!(cfg.group_enabled(TaskGroup::Exact) && cfg.group_enabled(TaskGroup::Sketch));
    let sketches = &cfg.aggregator.sketch.tasks;
    assert_eq!(
        sketches[0].resolved_algorithm(),
        SketchAlgorithm::SuperSpread
    );
    assert_eq!(
        sketches[0].element_key,
        vec![Dimension::DstIp],
        "element_fields is an alias"
    );
    assert_eq!(
        sketches[1].resolved_algorithm(),
        SketchAlgorithm::Hh,
        "skt_type 0 is the bucket sketch"
    );
    assert_eq!(
        sketches[1].size_threshold,
        Some(4_096_000),
        "size_thereshold (sic) is accepted"
    );
    let tasks = &cfg.aggregator.exact.tasks;
    assert_eq!(tasks[0].name, "per_five_tuple");
    assert_eq!(tasks[0].key.len(), 5);
    assert_eq!(
        tasks[1].key,
        vec![Dimension::SrcIp],
        "key_fields is an alias of key"
    );
    assert_eq!(
        cfg.smtp.port, 587,
        "a whole ${{VAR}} is re-read as a number"
    );
    assert_eq!(
        cfg.smtp.password, "pa$$:{word}",
        "values are not expanded again"
    );
    assert_eq!(
        cfg.aggregator.exact.writers[1]
            .clickhouse
            .as_ref()
            .unwrap()
            .port,
        9000
    );
    // The enabled writer's 60 s interval becomes the window.
    assert_eq!(cfg.window_ns(), 60_000_000_000);
}

#[test]
fn defaults_need_no_file() {
    let cfg = Config::from_yaml("", &|_| None).unwrap();
    let names: Vec<_> = cfg
        .aggregator
        .exact
        .tasks
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["per_src_ip", "per_dst_ip", "per_flow"]);
    assert_eq!(cfg.window_ns(), 60_000_000_000);
    assert_eq!(cfg.store.url, "sqlite:netspectra.db");
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_the_allowed_ones() {
    let e = err("aggregator:\n  perod: 60s\n");
    assert!(e.contains("perod") && e.contains("period"), "{e}");
    let e =
        err("aggregator:\n  exact:\n    tasks:\n      - name: a\n        key: [SrcIP, SrcMac]\n");
    assert!(
        e.contains("aggregator.exact.tasks[0].key[1]")
            && e.contains("SrcMac")
            && e.contains("DstPort"),
        "{e}"
    );
    let e = err("nonsense: 1\n");
    assert!(e.contains("nonsense") && e.contains("aggregator"), "{e}");
}

#[test]
fn bad_values_say_what_is_allowed() {
    let e = err("aggregator: { period: 60 }");
    assert!(e.contains("aggregator.period") && e.contains("60s"), "{e}");
    let e = err("aggregator: { period: soon }");
    assert!(e.contains("aggregator.period") && e.contains("unit"), "{e}");
    let e = err("aggregator: { num_workers: -1 }");
    assert!(e.contains("aggregator.num_workers"), "{e}");
    let e = err("aggregator: { period: 60s, snapshot_interval: 7s }");
    assert!(
        e.contains("snapshot_interval") && e.contains("divide"),
        "{e}"
    );
    let e = err(
        "aggregator:\n  exact:\n    tasks: [{name: a, key: [SrcIP]}, {name: a, key: [DstIP]}]\n",
    );
    assert!(e.contains("used twice"), "{e}");
    let e = err("aggregator:\n  exact:\n    tasks: [{name: a, key: []}]\n");
    assert!(e.contains("at least one dimension"), "{e}");
    assert!(matches!(
        Config::from_yaml("a: [", &|_| None),
        Err(ConfigError::Yaml { .. })
    ));
}

#[test]
fn environment_expands_inside_string_values_only() {
    let cfg = Config::from_yaml(
        "store: { url: \"sqlite:${DIR:-/tmp}/ns.db\" }\n# ${NOT_EXPANDED_IN_COMMENTS}\n",
        &env(&[]),
    )
    .unwrap();
    assert_eq!(cfg.store.url, "sqlite:/tmp/ns.db");
    let cfg = Config::from_yaml(
        "store: { url: \"sqlite:${DIR:-/tmp}/ns.db\" }",
        &env(&[("DIR", "/data")]),
    )
    .unwrap();
    assert_eq!(cfg.store.url, "sqlite:/data/ns.db");
    // An unset variable is empty (as in Go2NetSpectra): loading succeeds,
    // the key keeps its default, and only a role that needs the value fails.
    let cfg = Config::from_yaml("store: { url: \"${MISSING}\" }", &env(&[])).unwrap();
    assert_eq!(cfg.store.url, Config::default().store.url);
    let e = cfg.require_set("store.url").unwrap_err().to_string();
    assert!(
        e.contains("store.url") && e.contains("MISSING") && e.contains("not set"),
        "{e}"
    );
    assert!(cfg.require_set("api").is_ok());
    let cfg = Config::from_yaml(
        "store: { url: \"sqlite:${MISSING}/x.db\" }\nsmtp:\n  host: \"${MISSING}\"\n  port: ${PORT}\n",
        &env(&[]),
    )
    .unwrap();
    assert_eq!(cfg.store.url, "sqlite:/x.db", "a part of a value is empty");
    assert_eq!(cfg.smtp.port, 0, "a number left unset is its default");
    let warnings = cfg.warnings();
    assert_eq!(warnings.len(), 2, "one warning per variable: {warnings:?}");
    assert!(
        warnings[0].contains("MISSING") && warnings[0].contains("store.url, smtp.host"),
        "{warnings:?}"
    );
    // A variable cannot inject structure: its value stays one string.
    let cfg = Config::from_yaml("smtp: { host: \"${H}\" }", &env(&[("H", "a\nport: 25")])).unwrap();
    assert_eq!(cfg.smtp.host, "a\nport: 25");
}

#[test]
fn sketch_tasks_are_validated_with_messages_that_name_the_key() {
    let t = |body: &str| {
        err(&format!(
            "aggregator:\n  sketch:\n    tasks:\n      - {{name: s, key: [SrcIP], {body}}}\n"
        ))
    };
    let e = t("width: 8");
    assert!(e.contains("aggregator.sketch.tasks[0].algorithm"), "{e}");
    let e = t("algorithm: superspread");
    assert!(e.contains("element_key") && e.contains("DstIP"), "{e}");
    let e = t("algorithm: superspread, element_key: [DstIP], base: 0.7");
    assert!(e.contains("tasks[0].base") && e.contains("0.5"), "{e}");
    let e = t("algorithm: countmin, depth: 40");
    assert!(e.contains("tasks[0].depth") && e.contains("1 to 16"), "{e}");
    let e = t("skt_type: 7");
    assert!(e.contains("skt_type") && e.contains("superspread"), "{e}");
    let e = t("algorithm: bloom");
    assert!(e.contains("countmin") && e.contains("superspread"), "{e}");
    let e = err("aggregator:\n  exact:\n    tasks: [{name: a, key: [SrcIP]}]\n  sketch:\n    tasks: [{name: a, key: [SrcIP], algorithm: hh}]\n");
    assert!(e.contains("used twice"), "{e}");
}

#[test]
fn default_sketch_tasks_are_heavy_hitters_and_a_spreader() {
    let cfg = Config::from_yaml("", &|_| None).unwrap();
    let t = &cfg.aggregator.sketch.tasks;
    assert_eq!(t[0].name, "per_src_ip_hh");
    assert_eq!(t[0].resolved_algorithm(), SketchAlgorithm::CountMin);
    assert_eq!(t[1].name, "per_src_ip_spread");
    assert_eq!(
        (t[1].key.clone(), t[1].element_key.clone()),
        (vec![Dimension::SrcIp], vec![Dimension::DstIp])
    );
}

#[test]
fn bus_and_store_keys_have_defaults_and_parse_units() {
    let c = Config::from_yaml("{}", &|_| None).unwrap();
    assert_eq!(c.bus.prefix, "netspectra");
    assert_eq!(c.bus.shards, 16);
    assert_eq!(c.bus.stream_max_age.0, 24 * 3600 * 1_000_000_000);
    assert_eq!(c.bus.stream_max_bytes.0, 10 << 30);
    assert_eq!(c.store.spool_dir, "netspectra-spool");
    assert_eq!(c.store.retention, None);
    let c = Config::from_yaml(
        "bus: { prefix: lab, shards: 8, jetstream: true, stream_max_age: 2h, \
         stream_max_bytes: 512MiB, ack_wait: 5s, member_ttl: 3s, interop_subject: gons.packets.raw }\n\
         store: { url: 'sqlite:x.db', spool_dir: /var/spool/ns, retention: 30d }",
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        (c.bus.prefix.as_str(), c.bus.shards, c.bus.jetstream),
        ("lab", 8, true)
    );
    assert_eq!(c.bus.stream_max_bytes.0, 512 << 20);
    assert_eq!(c.bus.ack_wait.0, 5_000_000_000);
    assert_eq!(c.store.retention.unwrap().0, 30 * 86_400 * 1_000_000_000);
    for (yaml, key) in [
        ("bus: { shards: 0 }", "bus.shards"),
        ("bus: { member_ttl: 100ms }", "bus.member_ttl"),
        ("bus: { prefix: 'a b' }", "bus.prefix"),
        ("store: { retention: 5m }", "store.retention"),
        ("bus: { stream_max_bytes: 10 parsecs }", "stream_max_bytes"),
        ("bus: { nope: 1 }", "bus.nope"),
    ] {
        let err = Config::from_yaml(yaml, &|_| None).unwrap_err().to_string();
        assert!(err.contains(key), "{yaml}: {err}");
    }
}

#[test]
fn ai_analysis_timeout_defaults_to_a_minute_and_parses_units() {
    let c = Config::from_yaml("{}", &|_| None).unwrap();
    assert_eq!(c.alerter.ai_analysis.timeout.0, 60_000_000_000);
    let c = Config::from_yaml(
        "alerter: { ai_analysis: { enabled: true, timeout: 1500ms } }",
        &|_| None,
    )
    .unwrap();
    assert!(c.alerter.ai_analysis.enabled);
    assert_eq!(c.alerter.ai_analysis.timeout.0, 1_500_000_000);
    for yaml in [
        "alerter: { ai_analysis: { timeout: 0s } }",
        "alerter: { ai_analysis: { timeout: 0 } }",
    ] {
        let e = err(yaml);
        assert!(
            e.contains("alerter.ai_analysis.timeout") && e.contains("greater than 0"),
            "{yaml}: {e}"
        );
    }
    let e = err("alerter: { ai_analysis: { timeout: 60 } }");
    assert!(e.contains("needs a unit"), "{e}");
}
