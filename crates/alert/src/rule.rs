//! Alert rules as the alerter uses them: the `alerter.rules` of the config,
//! checked against the configured tasks so that a typo is a config error
//! naming its key instead of a rule that silently never fires.

use netspectra_model::config::{AlertRuleConfig, Config, NotifierConfig, SketchAlgorithm};
use netspectra_model::task::{TaskKind, TaskSpec};
use netspectra_model::time::NS_PER_SEC;
use netspectra_model::Dimension;
use std::fmt;

/// What a rule measures, per key or over the whole task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Packets of a key in the window (exact or Count-Min).
    Packets,
    /// Bytes of a key in the window (exact or Count-Min).
    Bytes,
    /// A key's packets divided by the window length (exact).
    PacketsPerSecond,
    /// A key's bytes × 8 divided by the window length (exact).
    BitsPerSecond,
    /// Every key's packets together (exact).
    TotalPackets,
    /// Every key's bytes together (exact).
    TotalBytes,
    /// How many keys the window has (exact).
    TotalFlows,
    /// A key's distinct elements (SuperSpread).
    Distinct,
}

impl Metric {
    /// The canonical name (what the alert JSON carries).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Packets => "packets",
            Metric::Bytes => "bytes",
            Metric::PacketsPerSecond => "packets_per_second",
            Metric::BitsPerSecond => "bits_per_second",
            Metric::TotalPackets => "total_packets",
            Metric::TotalBytes => "total_bytes",
            Metric::TotalFlows => "total_flows",
            Metric::Distinct => "distinct",
        }
    }

    /// Whether each key is its own alert instance (else one per task).
    pub fn per_key(self) -> bool {
        !matches!(
            self,
            Metric::TotalPackets | Metric::TotalBytes | Metric::TotalFlows
        )
    }

    /// The metric `name` means on a task of `kind`, with the names a task
    /// of that kind accepts (for the error message).
    fn parse(name: &str, kind: TaskKind) -> Result<Metric, &'static str> {
        use Metric::*;
        let (found, allowed) = match kind {
            TaskKind::Exact => (
                match name {
                    "packets" => Some(Packets),
                    "bytes" => Some(Bytes),
                    "packets_per_second" => Some(PacketsPerSecond),
                    "bits_per_second" => Some(BitsPerSecond),
                    "total_packets" => Some(TotalPackets),
                    "total_bytes" => Some(TotalBytes),
                    "total_flows" => Some(TotalFlows),
                    _ => None,
                },
                "packets, bytes, packets_per_second, bits_per_second, total_packets, total_bytes, total_flows",
            ),
            TaskKind::Sketch(SketchAlgorithm::SuperSpread) => (
                match name {
                    "distinct" | "super_spreader_spread" => Some(Distinct),
                    _ => None,
                },
                "distinct (alias super_spreader_spread)",
            ),
            TaskKind::Sketch(_) => (
                match name {
                    "packets" | "heavy_hitter_count" => Some(Packets),
                    "bytes" | "heavy_hitter_size" => Some(Bytes),
                    _ => None,
                },
                "packets (alias heavy_hitter_count), bytes (alias heavy_hitter_size)",
            ),
        };
        found.ok_or(allowed)
    }
}

/// A comparison between a measured value and the rule's threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==` (Go2NetSpectra's `=` too)
    Eq,
    /// `!=`
    Ne,
}

impl Operator {
    /// Parses `>`, `>=`, `<`, `<=`, `==`, `=` or `!=`.
    pub fn parse(text: &str) -> Option<Operator> {
        Some(match text.trim() {
            ">" => Operator::Gt,
            ">=" => Operator::Ge,
            "<" => Operator::Lt,
            "<=" => Operator::Le,
            "==" | "=" => Operator::Eq,
            "!=" => Operator::Ne,
            _ => return None,
        })
    }

    /// Whether `value` compared with `threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Operator::Gt => value > threshold,
            Operator::Ge => value >= threshold,
            Operator::Lt => value < threshold,
            Operator::Le => value <= threshold,
            Operator::Eq => value == threshold,
            Operator::Ne => value != threshold,
        }
    }

    /// The operator as written in alerts (`==` for `=`).
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Eq => "==",
            Operator::Ne => "!=",
        }
    }
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look (the default).
    Warning,
    /// Someone should look now.
    Critical,
}

impl Severity {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of rows a rule reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Exact rows per window.
    Exact,
    /// Count-Min / heavy-bucket estimates per sketch period.
    HeavyHitters,
    /// SuperSpread estimates per sketch period.
    SuperSpreaders,
}

/// One checked rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// The task it watches.
    pub task: String,
    /// The instances' key: the task's key for per-key metrics, none for
    /// task-wide ones.
    pub key: Vec<Dimension>,
    /// The task's key (how its rows are stored).
    pub task_key: Vec<Dimension>,
    /// Exact rows or sketch estimates.
    pub source: Source,
    /// What is compared.
    pub metric: Metric,
    /// How.
    pub operator: Operator,
    /// With what.
    pub threshold: f64,
    /// Packet time the condition must hold before firing, ns.
    pub for_ns: u64,
    /// Re-notify a firing alert this often, ns (0: never).
    pub repeat_ns: u64,
    /// Urgency.
    pub severity: Severity,
    /// Notifier names (all when the rule names none).
    pub notifiers: Vec<String>,
}

/// The alerter's whole configuration, checked.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Rules in config order.
    pub rules: Vec<Rule>,
    /// Notifier definitions, by name.
    pub notifiers: Vec<NotifierConfig>,
    /// How often live roles look for newly closed windows, ns.
    pub check_interval_ns: u64,
    /// Window length (exact rows), ns: where a stored history has no row
    /// for a window, the window was empty.
    pub window_ns: u64,
    /// Sketch period length, ns (the same for sketch estimates).
    pub period_ns: u64,
}

/// A rule or notifier that cannot work, named by its config key.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{key}: {message}")]
pub struct RuleError {
    /// The config key, e.g. `alerter.rules[0].metric`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Default `check_interval`.
pub const DEFAULT_CHECK_INTERVAL_NS: u64 = 30 * NS_PER_SEC;

impl Rules {
    /// The rules and notifiers of `config`, checked against the tasks it
    /// configures (`tasks`).
    pub fn from_config(config: &Config, tasks: &[TaskSpec]) -> Result<Rules, RuleError> {
        let a = &config.alerter;
        let notifiers = check_notifiers(&a.notifiers, config)?;
        let names: Vec<&str> = notifiers.iter().map(|n| n.name.as_str()).collect();
        let mut rules: Vec<Rule> = Vec::with_capacity(a.rules.len());
        for (i, r) in a.rules.iter().enumerate() {
            let rule = check_rule(i, r, tasks, &names)?;
            if rules.iter().any(|o| o.name == rule.name) {
                return Err(RuleError {
                    key: format!("alerter.rules[{i}].name"),
                    message: format!("rule name `{}` is used twice", rule.name),
                });
            }
            rules.push(rule);
        }
        let check_interval_ns = match a.check_interval {
            Some(d) if d.0 > 0 => d.0,
            _ => DEFAULT_CHECK_INTERVAL_NS,
        };
        Ok(Rules {
            rules,
            notifiers,
            check_interval_ns,
            window_ns: config.window_ns().max(1),
            period_ns: config.aggregator.period.0.max(1),
        })
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

fn check_rule(
    i: usize,
    r: &AlertRuleConfig,
    tasks: &[TaskSpec],
    notifiers: &[&str],
) -> Result<Rule, RuleError> {
    let err = |field: &str, message: String| RuleError {
        key: format!("alerter.rules[{i}].{field}"),
        message,
    };
    if r.name.trim().is_empty() {
        return Err(err("name", "a rule needs a name".into()));
    }
    let Some(task) = tasks.iter().find(|t| t.name == r.task_name) else {
        let known: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        return Err(err(
            "task_name",
            format!(
                "unknown task `{}`; configured tasks: {}",
                r.task_name,
                known.join(", ")
            ),
        ));
    };
    let metric = Metric::parse(r.metric.trim(), task.kind).map_err(|allowed| {
        err(
            "metric",
            format!(
                "unknown metric `{}` for {} task `{}`; allowed: {allowed}",
                r.metric,
                kind_text(task.kind),
                task.name
            ),
        )
    })?;
    let operator = Operator::parse(&r.operator).ok_or_else(|| {
        err(
            "operator",
            format!(
                "unknown operator `{}`; allowed: > >= < <= == != (= means ==)",
                r.operator
            ),
        )
    })?;
    if !r.threshold.is_finite() {
        return Err(err("threshold", "must be a finite number".into()));
    }
    let severity = match r.severity.trim() {
        "" | "warning" => Severity::Warning,
        "info" => Severity::Info,
        "critical" => Severity::Critical,
        other => {
            return Err(err(
                "severity",
                format!("unknown severity `{other}`; allowed: info, warning, critical"),
            ))
        }
    };
    let wanted = match &r.notifiers {
        Some(list) => {
            for n in list {
                if !notifiers.contains(&n.as_str()) {
                    return Err(err(
                        "notifiers",
                        format!(
                            "unknown notifier `{n}`; defined: {}",
                            if notifiers.is_empty() {
                                "none (add alerter.notifiers)".to_string()
                            } else {
                                notifiers.join(", ")
                            }
                        ),
                    ));
                }
            }
            list.clone()
        }
        None => notifiers.iter().map(|n| n.to_string()).collect(),
    };
    let source = match task.kind {
        TaskKind::Exact => Source::Exact,
        TaskKind::Sketch(SketchAlgorithm::SuperSpread) => Source::SuperSpreaders,
        TaskKind::Sketch(_) => Source::HeavyHitters,
    };
    Ok(Rule {
        name: r.name.trim().to_string(),
        task: task.name.clone(),
        key: if metric.per_key() {
            task.key.clone()
        } else {
            Vec::new()
        },
        task_key: task.key.clone(),
        source,
        metric,
        operator,
        threshold: r.threshold,
        for_ns: r.for_.map_or(0, |d| d.0),
        repeat_ns: r.repeat_interval.map_or(0, |d| d.0),
        severity,
        notifiers: wanted,
    })
}

fn kind_text(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Exact => "exact",
        TaskKind::Sketch(SketchAlgorithm::SuperSpread) => "SuperSpread",
        TaskKind::Sketch(SketchAlgorithm::CountMin) => "Count-Min",
        TaskKind::Sketch(SketchAlgorithm::Hh) => "heavy-hitter",
    }
}

/// The notifiers as configured, checked; with none configured and an
/// `smtp.host` set, one email notifier named `email` (Go2NetSpectra mailed
/// every alert).
fn check_notifiers(
    list: &[NotifierConfig],
    config: &Config,
) -> Result<Vec<NotifierConfig>, RuleError> {
    if list.is_empty() {
        return Ok(if config.smtp.host.trim().is_empty() {
            Vec::new()
        } else {
            vec![NotifierConfig {
                name: "email".into(),
                kind: "email".into(),
                ..NotifierConfig::default()
            }]
        });
    }
    let mut out: Vec<NotifierConfig> = Vec::new();
    for (i, n) in list.iter().enumerate() {
        let err = |field: &str, message: String| RuleError {
            key: format!("alerter.notifiers[{i}].{field}"),
            message,
        };
        if n.name.trim().is_empty() {
            return Err(err("name", "a notifier needs a name".into()));
        }
        if out.iter().any(|o| o.name == n.name) {
            return Err(err(
                "name",
                format!("notifier `{}` is defined twice", n.name),
            ));
        }
        match n.kind.as_str() {
            "email" => {
                if config.smtp.host.trim().is_empty() {
                    return Err(err(
                        "type",
                        "an email notifier needs the smtp section (smtp.host is empty)".into(),
                    ));
                }
                if config.smtp.to.split(',').all(|t| t.trim().is_empty()) {
                    return Err(err(
                        "type",
                        "an email notifier needs recipients (smtp.to is empty)".into(),
                    ));
                }
            }
            "webhook" => {
                let url = n.url.trim();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(err(
                        "url",
                        format!(
                            "a webhook needs an http:// or https:// URL, got `{}`",
                            netspectra_model::redact::redact_urls(url)
                        ),
                    ));
                }
                if !matches!(n.format.as_str(), "" | "json" | "slack") {
                    return Err(err(
                        "format",
                        format!("unknown format `{}`; allowed: json, slack", n.format),
                    ));
                }
            }
            other => {
                return Err(err(
                    "type",
                    format!("unknown notifier type `{other}`; allowed: email, webhook"),
                ))
            }
        }
        out.push(n.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netspectra_model::task::configured_tasks;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, &|_| None).unwrap()
    }

    fn rules(yaml: &str) -> Result<Rules, RuleError> {
        let c = config(yaml);
        Rules::from_config(&c, &configured_tasks(&c))
    }

    #[test]
    fn go2netspectra_rules_load_with_their_aliases() {
        let r = rules(
            "alerter:\n  enabled: true\n  rules:\n    - {name: a, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 5e8}\n    - {name: b, task_name: per_src_ip, metric: total_flows, operator: '=', threshold: 3}\n",
        )
        .unwrap();
        assert_eq!(r.rules[0].metric, Metric::Bytes);
        assert!(r.rules[0].metric.per_key());
        assert_eq!(r.rules[0].severity, Severity::Warning);
        assert_eq!(r.rules[1].operator, Operator::Eq);
        assert!(r.rules[1].key.is_empty());
        assert_eq!(r.check_interval_ns, DEFAULT_CHECK_INTERVAL_NS);
    }

    #[test]
    fn mistakes_are_errors_naming_the_key() {
        let e = rules("alerter:\n  rules:\n    - {name: a, task_name: nope, metric: bytes, operator: '>', threshold: 1}\n").unwrap_err();
        assert_eq!(e.key, "alerter.rules[0].task_name");
        assert!(e.message.contains("per_src_ip"), "{e}");
        let e = rules("alerter:\n  rules:\n    - {name: a, task_name: per_src_ip, metric: distinct, operator: '>', threshold: 1}\n").unwrap_err();
        assert_eq!(e.key, "alerter.rules[0].metric");
        assert!(e.message.contains("bits_per_second"), "{e}");
        let e = rules("alerter:\n  rules:\n    - {name: a, task_name: per_src_ip, metric: bytes, operator: '=>', threshold: 1}\n").unwrap_err();
        assert_eq!(e.key, "alerter.rules[0].operator");
        let e = rules("alerter:\n  rules:\n    - {name: a, task_name: per_src_ip, metric: bytes, operator: '>', threshold: 1, notifiers: [x]}\n").unwrap_err();
        assert_eq!(e.key, "alerter.rules[0].notifiers");
        let e = rules("alerter:\n  notifiers:\n    - {name: m, type: email}\n").unwrap_err();
        assert_eq!(e.key, "alerter.notifiers[0].type");
        let e = rules("alerter:\n  notifiers:\n    - {name: w, type: webhook, url: 'ftp://x'}\n")
            .unwrap_err();
        assert_eq!(e.key, "alerter.notifiers[0].url");
    }

    #[test]
    fn operators_compare_as_written() {
        for (op, v, t, want) in [
            (">", 2.0, 1.0, true),
            (">", 1.0, 1.0, false),
            (">=", 1.0, 1.0, true),
            ("<", 0.5, 1.0, true),
            ("<=", 1.5, 1.0, false),
            ("=", 1.0, 1.0, true),
            ("!=", 1.0, 1.0, false),
        ] {
            assert_eq!(
                Operator::parse(op).unwrap().holds(v, t),
                want,
                "{v} {op} {t}"
            );
        }
        assert_eq!(Operator::parse("<>"), None);
    }
}
