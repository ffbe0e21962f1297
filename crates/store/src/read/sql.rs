//! The read queries, written once and rendered for each backend.
//!
//! Both backends hold the same logical tables (see [`crate::schema`]); they
//! differ in column names for times (SQLite keeps ns in `window_start`,
//! ClickHouse in `window_start_ns` beside a `DateTime` it partitions and
//! sorts by), in how a 16-byte address is bound, and in whether an empty
//! `sum()` is NULL. Every value is a [`Param`], bound by the backend's
//! client: nothing from a request is ever part of the SQL text.

use super::{Measure, RunSelect, Scope, SketchMeasure, TimeRange};
use netspectra_model::ip::IpBytes;

/// Which SQL to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    ClickHouse,
}

/// A value bound to one `?`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
    Ip(IpBytes),
}

/// SQL text with `?` placeholders and their values, in order.
#[derive(Clone, Debug)]
pub(crate) struct Query {
    pub text: String,
    pub params: Vec<Param>,
}

/// Key columns, in the order [`super::KeyedRow`] reads them.
const KEY: &str = "src_ip, dst_ip, src_port, dst_port, protocol, vlan";

/// The two tables a question reads, with their per-dialect time columns.
#[derive(Clone, Copy)]
enum Table {
    Exact,
    Sketch,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Exact => "exact_rows",
            Table::Sketch => "sketch_rows",
        }
    }

    /// Start (ns), end (ns) and, on ClickHouse, the `DateTime` sort column.
    fn times(self, d: Dialect) -> (&'static str, &'static str, &'static str) {
        match (self, d) {
            (Table::Exact, Dialect::Sqlite) => ("window_start", "window_end", ""),
            (Table::Exact, Dialect::ClickHouse) => {
                ("window_start_ns", "window_end_ns", "window_start")
            }
            (Table::Sketch, Dialect::Sqlite) => ("period_start", "period_end", ""),
            (Table::Sketch, Dialect::ClickHouse) => {
                ("period_start_ns", "period_end_ns", "period_start")
            }
        }
    }
}

struct Builder {
    dialect: Dialect,
    text: String,
    params: Vec<Param>,
}

impl Builder {
    fn new(dialect: Dialect) -> Builder {
        Builder {
            dialect,
            text: String::with_capacity(512),
            params: Vec::new(),
        }
    }

    fn sql(&mut self, s: &str) -> &mut Builder {
        self.text.push_str(s);
        self
    }

    fn param(&mut self, p: Param) -> &mut Builder {
        let placeholder = match (&p, self.dialect) {
            (Param::Ip(_), Dialect::ClickHouse) => "toFixedString(unhex(?), 16)",
            _ => "?",
        };
        self.text.push_str(placeholder);
        self.params.push(p);
        self
    }

    /// An aggregate that is 0, not NULL, over no rows (ClickHouse already is).
    fn zero_if_empty(&mut self, aggregate: &str) -> &mut Builder {
        match self.dialect {
            Dialect::Sqlite => self.sql("coalesce(").sql(aggregate).sql(", 0)"),
            Dialect::ClickHouse => self.sql(aggregate),
        }
    }

    /// `FROM table WHERE …` for a scope: task, time range, filter.
    fn scope_where(&mut self, table: Table, scope: &Scope<'_>) -> &mut Builder {
        self.scope_where_keys(table, scope, true)
    }

    /// [`Builder::scope_where`], with or without the key filter (SQLite's
    /// exact rows are blocks: their keys are filtered as they are decoded).
    fn scope_where_keys(&mut self, table: Table, scope: &Scope<'_>, keys: bool) -> &mut Builder {
        let (start, _, sort_time) = table.times(self.dialect);
        self.sql(" FROM ").sql(table.name()).sql(" WHERE task = ");
        self.param(Param::Text(scope.task.to_string()));
        self.sql(match scope.run {
            RunSelect::Latest => " AND run_id IN (SELECT max(run_id) FROM tasks WHERE name = ",
            RunSelect::All | RunSelect::Id(_) => {
                " AND run_id IN (SELECT run_id FROM tasks WHERE name = "
            }
        });
        self.param(Param::Text(scope.task.to_string()));
        self.sql(" AND key = ");
        self.param(Param::Text(crate::schema::key_text(scope.key)));
        if let RunSelect::Id(id) = scope.run {
            self.sql(" AND run_id = ").param(Param::Int(id));
        }
        let runs = match self.dialect {
            Dialect::Sqlite => "runs",
            Dialect::ClickHouse => "runs FINAL",
        };
        self.sql(" AND run_id NOT IN (SELECT run_id FROM ")
            .sql(runs)
            .sql(" WHERE status = ");
        self.param(Param::Text(crate::schema::REPLACED.to_string()));
        self.sql("))");
        let TimeRange { from_ns, to_ns } = scope.range;
        self.sql(" AND ").sql(start).sql(" >= ").param(int(from_ns));
        self.sql(" AND ").sql(start).sql(" < ").param(int(to_ns));
        if self.dialect == Dialect::ClickHouse {
            // Lets ClickHouse skip partitions and granules by its sort key.
            let secs = |ns: u64| int((ns / 1_000_000_000).min(u64::from(u32::MAX)));
            self.sql(" AND ").sql(sort_time).sql(" >= toDateTime(");
            self.param(secs(from_ns)).sql(")");
            self.sql(" AND ").sql(sort_time).sql(" <= toDateTime(");
            self.param(secs(to_ns)).sql(")");
        }
        if !keys {
            return self;
        }
        let f = &scope.filter.for_key(scope.key);
        for (column, cidr) in [("src_ip", f.src_ip), ("dst_ip", f.dst_ip)] {
            if let Some(c) = cidr {
                self.sql(" AND ")
                    .sql(column)
                    .sql(" >= ")
                    .param(Param::Ip(c.first));
                self.sql(" AND ")
                    .sql(column)
                    .sql(" <= ")
                    .param(Param::Ip(c.last));
            }
        }
        let numbers = [
            ("src_port", f.src_port.map(i64::from)),
            ("dst_port", f.dst_port.map(i64::from)),
            ("protocol", f.protocol.map(i64::from)),
        ];
        for (column, value) in numbers {
            if let Some(v) = value {
                self.sql(" AND ")
                    .sql(column)
                    .sql(" = ")
                    .param(Param::Int(v));
            }
        }
        self
    }

    fn limit(&mut self, limit: usize) -> &mut Builder {
        self.sql(" LIMIT ")
            .param(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)))
    }

    fn build(&mut self) -> Query {
        Query {
            text: std::mem::take(&mut self.text),
            params: std::mem::take(&mut self.params),
        }
    }
}

fn int(v: u64) -> Param {
    Param::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// What [`exact_blocks`] selects.
pub(crate) const BLOCK_COLUMNS: &str = "run_id, engine_id, window_start, window_end, data";

/// SQLite: the blocks of exact rows in scope (run id, engine id, window
/// start, window end, data), in window order; the key filter is the
/// caller's to apply as it decodes them.
pub(crate) fn exact_blocks(scope: &Scope<'_>) -> Query {
    let mut b = Builder::new(Dialect::Sqlite);
    b.sql("SELECT ").sql(BLOCK_COLUMNS);
    b.scope_where_keys(Table::Exact, scope, false);
    b.sql(" ORDER BY window_start");
    b.build()
}

/// Numbers: first seen, last seen, packets, bytes, distinct keys.
pub(crate) fn exact_totals(d: Dialect, scope: &Scope<'_>) -> Query {
    let mut b = Builder::new(d);
    b.sql("SELECT ");
    b.zero_if_empty("min(f)").sql(", ");
    b.zero_if_empty("max(l)").sql(", ");
    b.zero_if_empty("sum(p)").sql(", ");
    b.zero_if_empty("sum(b)").sql(", count(*) FROM (SELECT min(first_seen) AS f, max(last_seen) AS l, sum(packets) AS p, sum(bytes) AS b");
    b.scope_where(Table::Exact, scope);
    b.sql(" GROUP BY ").sql(KEY).sql(")");
    b.build()
}

/// Keyed: packets, bytes, first seen, last seen, distinct windows.
pub(crate) fn exact_top(d: Dialect, scope: &Scope<'_>, by: Measure, limit: usize) -> Query {
    let (start, _, _) = Table::Exact.times(d);
    let mut b = Builder::new(d);
    b.sql("SELECT ").sql(KEY);
    b.sql(", sum(packets) AS p, sum(bytes) AS b, min(first_seen) AS f, max(last_seen) AS l, count(DISTINCT ")
        .sql(start)
        .sql(") AS n");
    b.scope_where(Table::Exact, scope);
    let order = match by {
        Measure::Packets => "p DESC, b DESC, ",
        Measure::Bytes => "b DESC, p DESC, ",
    };
    b.sql(" GROUP BY ")
        .sql(KEY)
        .sql(" ORDER BY ")
        .sql(order)
        .sql(KEY);
    b.limit(limit);
    b.build()
}

/// Numbers: first seen, last seen, packets, bytes, distinct windows.
pub(crate) fn exact_trace(d: Dialect, scope: &Scope<'_>) -> Query {
    let (start, _, _) = Table::Exact.times(d);
    let mut b = Builder::new(d);
    b.sql("SELECT ");
    b.zero_if_empty("min(first_seen)").sql(", ");
    b.zero_if_empty("max(last_seen)").sql(", ");
    b.zero_if_empty("sum(packets)").sql(", ");
    b.zero_if_empty("sum(bytes)")
        .sql(", count(DISTINCT ")
        .sql(start)
        .sql(")");
    b.scope_where(Table::Exact, scope);
    b.build()
}

/// Numbers per window: start, end, packets, bytes, distinct keys.
pub(crate) fn exact_series(d: Dialect, scope: &Scope<'_>, limit: usize) -> Query {
    let (start, end, _) = Table::Exact.times(d);
    let mut b = Builder::new(d);
    b.sql("SELECT s, max(e), sum(p), sum(b), count(*) FROM (SELECT ")
        .sql(start)
        .sql(" AS s, max(")
        .sql(end)
        .sql(") AS e, sum(packets) AS p, sum(bytes) AS b");
    b.scope_where(Table::Exact, scope);
    b.sql(" GROUP BY ").sql(start).sql(", ").sql(KEY);
    b.sql(") GROUP BY s ORDER BY s");
    b.limit(limit);
    b.build()
}

/// Keyed: estimate, error bound, first period start, last period end, periods.
pub(crate) fn sketch_top(
    d: Dialect,
    scope: &Scope<'_>,
    measure: SketchMeasure,
    limit: usize,
) -> Query {
    let (start, end, _) = Table::Sketch.times(d);
    let combine = match measure {
        SketchMeasure::Distinct => "max",
        SketchMeasure::Packets | SketchMeasure::Bytes => "sum",
    };
    let mut b = Builder::new(d);
    b.sql("SELECT ").sql(KEY).sql(", ");
    b.sql(combine).sql("(estimate) AS a, ");
    b.sql(combine).sql("(error_bound) AS b, min(");
    b.sql(start)
        .sql(") AS f, max(")
        .sql(end)
        .sql(") AS l, count(*) AS n");
    b.scope_where(Table::Sketch, scope);
    b.sql(" AND measure = ")
        .param(Param::Text(measure.name().to_string()));
    b.sql(" GROUP BY ")
        .sql(KEY)
        .sql(" ORDER BY a DESC, ")
        .sql(KEY);
    b.limit(limit);
    b.build()
}

/// Keyed, like [`exact_top`], but only keys whose packets (or bytes) lie in
/// `[lo, hi]` (either bound open), largest first: the candidates of an
/// alert rule, which checks its exact condition on them.
pub(crate) fn exact_in_range(
    d: Dialect,
    scope: &Scope<'_>,
    by: Measure,
    lo: Option<u64>,
    hi: Option<u64>,
    limit: usize,
) -> Query {
    let mut b = Builder::new(d);
    b.sql("SELECT ").sql(KEY);
    b.sql(", sum(packets) AS p, sum(bytes) AS b, min(first_seen) AS f, max(last_seen) AS l, count(*) AS n");
    b.scope_where(Table::Exact, scope);
    b.sql(" GROUP BY ").sql(KEY);
    let column = match by {
        Measure::Packets => "p",
        Measure::Bytes => "b",
    };
    let mut first = true;
    for (bound, op) in [(lo, " >= "), (hi, " <= ")] {
        if let Some(v) = bound {
            b.sql(if first { " HAVING " } else { " AND " });
            b.sql(column).sql(op).param(int(v));
            first = false;
        }
    }
    b.sql(" ORDER BY ").sql(column).sql(" DESC, ").sql(KEY);
    b.limit(limit);
    b.build()
}

/// Numbers per sketch period: start, end, 0, 0, partial rows (in `n`).
pub(crate) fn sketch_periods(d: Dialect, scope: &Scope<'_>, limit: usize) -> Query {
    let (start, end, _) = Table::Sketch.times(d);
    let mut b = Builder::new(d);
    b.sql("SELECT ").sql(start).sql(", max(").sql(end).sql(")");
    b.sql(match d {
        Dialect::Sqlite => ", 0, 0, sum(partial != 0)",
        Dialect::ClickHouse => ", toUInt64(0), toUInt64(0), toUInt64(sum(partial != 0))",
    });
    b.scope_where(Table::Sketch, scope);
    b.sql(" GROUP BY ").sql(start).sql(" ORDER BY ").sql(start);
    b.limit(limit);
    b.build()
}

/// Numbers per engine: 0, the end of its newest stored window or period
/// starting at or after `from_ns`, 0, 0, rows.
pub(crate) fn watermarks(d: Dialect, from_ns: u64) -> Query {
    let mut b = Builder::new(d);
    b.sql(match d {
        Dialect::Sqlite => "SELECT 0, max(e), 0, 0, count(*) FROM (SELECT engine_id, window_end AS e FROM exact_rows WHERE window_start >= ",
        Dialect::ClickHouse => "SELECT toInt64(0), max(e), toUInt64(0), toUInt64(0), toUInt64(count()) FROM (SELECT engine_id, window_end_ns AS e FROM exact_rows WHERE window_start_ns >= ",
    });
    b.param(int(from_ns));
    b.sql(match d {
        Dialect::Sqlite => " UNION ALL SELECT engine_id, period_end AS e FROM sketch_rows WHERE period_start >= ",
        Dialect::ClickHouse => " UNION ALL SELECT engine_id, period_end_ns AS e FROM sketch_rows WHERE period_start_ns >= ",
    });
    b.param(int(from_ns));
    b.sql(") GROUP BY engine_id");
    b.build()
}

/// Numbers: how many of the scope's sketch rows are partial (in `n`).
pub(crate) fn sketch_partial(d: Dialect, scope: &Scope<'_>) -> Query {
    let mut b = Builder::new(d);
    b.sql(match d {
        Dialect::Sqlite => "SELECT 0, 0, 0, 0, count(*)",
        Dialect::ClickHouse => {
            "SELECT toInt64(0), toInt64(0), toUInt64(0), toUInt64(0), toUInt64(count())"
        }
    });
    b.scope_where(Table::Sketch, scope);
    b.sql(" AND partial != 0");
    b.build()
}

/// Text: the algorithm of the task's newest stored estimate.
pub(crate) fn sketch_algorithm(d: Dialect, task: &str) -> Query {
    let (start, _, _) = Table::Sketch.times(d);
    let mut b = Builder::new(d);
    b.sql("SELECT algorithm FROM sketch_rows WHERE task = ")
        .param(Param::Text(task.to_string()))
        .sql(" ORDER BY ")
        .sql(start)
        .sql(" DESC LIMIT 1");
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::Filter;

    #[test]
    fn values_are_placeholders_never_text() {
        let hostile = "x' OR 1=1; DROP TABLE runs; --";
        let filter = Filter {
            src_ip: Some("10.0.0.0/8".parse().unwrap()),
            dst_port: Some(443),
            ..Filter::default()
        };
        let scope = Scope {
            task: hostile,
            key: &[],
            range: TimeRange::ALL,
            filter: &filter,
            run: RunSelect::Id(7),
        };
        for d in [Dialect::Sqlite, Dialect::ClickHouse] {
            for q in [
                exact_totals(d, &scope),
                exact_top(d, &scope, Measure::Bytes, 10),
                exact_trace(d, &scope),
                exact_series(d, &scope, 10),
                sketch_top(d, &scope, SketchMeasure::Distinct, 10),
                sketch_algorithm(d, hostile),
            ] {
                assert!(!q.text.contains("DROP"), "{}", q.text);
                assert_eq!(q.text.matches('?').count(), q.params.len(), "{}", q.text);
                assert!(q.params.contains(&Param::Text(hostile.to_string())));
            }
        }
    }
}
