//! The gRPC face: `netspectra.v1.QueryService` from `query.proto`,
//! Go2NetSpectra's `v1.QueryService` answered by the same code
//! ([`Reference`]), and the standard `grpc.health.v1` and reflection
//! services.

use crate::ask::AskInput;
use crate::error::{bad, ApiError};
use crate::pb;
use crate::pb::query_service_server::QueryService as Native;
use crate::service::{KeyJson, QueryService, Time};
use crate::Auth;
use netspectra_store::read::Measure;
use prost_types::Timestamp;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Implements the generated service trait over [`QueryService`]. Every
/// method but `HealthCheck` checks the bearer token itself (an interceptor
/// cannot tell the methods apart).
pub struct Grpc {
    service: Arc<QueryService>,
    auth: Auth,
}

impl Grpc {
    /// Wraps the shared service.
    pub fn new(service: Arc<QueryService>, auth: Auth) -> Grpc {
        Grpc { service, auth }
    }
}

fn ns(name: &str, t: Option<Timestamp>) -> Result<Option<u64>, ApiError> {
    t.map(|t| {
        u64::try_from(t.seconds)
            .ok()
            .filter(|_| (0..1_000_000_000).contains(&t.nanos))
            .and_then(|s| s.checked_mul(1_000_000_000))
            .and_then(|ns| ns.checked_add(t.nanos as u64))
            .ok_or_else(|| {
                bad(format!(
                    "{name}: timestamp before 1970, after 2554 or malformed"
                ))
            })
    })
    .transpose()
}

fn stamp(t: Time) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: (t.0 / 1_000_000_000) as i64,
        nanos: (t.0 % 1_000_000_000) as i32,
    })
}

fn text(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn key_map(key: KeyJson) -> HashMap<String, String> {
    key.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// The reference's `HeavyHitter.flow`: `SrcIP=10.0.0.1,DstPort=443`.
fn flow_text(key: &KeyJson) -> String {
    key.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The filter fields every request shares, in one place.
struct Fields {
    task: String,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    src_ip: String,
    dst_ip: String,
    src_port: Option<u32>,
    dst_port: Option<u32>,
    protocol: Option<u32>,
    limit: Option<u64>,
    run: String,
}

impl Fields {
    fn ask(self, service: &QueryService) -> Result<crate::ask::Ask, ApiError> {
        AskInput {
            task: self.task,
            from_ns: ns("start_time", self.start)?,
            to_ns: ns("end_time", self.end)?,
            src_ip: text(self.src_ip),
            dst_ip: text(self.dst_ip),
            src_port: self.src_port.map(u64::from),
            dst_port: self.dst_port.map(u64::from),
            protocol: self.protocol.map(u64::from),
            limit: self.limit,
            run: text(self.run),
        }
        .validate(service.limits())
    }
}

macro_rules! fields {
    ($r:expr, $limit:expr) => {
        Fields {
            task: $r.task_name,
            start: $r.start_time,
            end: $r.end_time,
            src_ip: $r.src_ip,
            dst_ip: $r.dst_ip,
            src_port: $r.src_port,
            dst_port: $r.dst_port,
            protocol: $r.protocol,
            limit: $limit,
            run: $r.run,
        }
    };
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for Grpc {
    async fn health_check(
        &self,
        req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        // Open to all: the store's error text only with a valid token.
        let status = match self.service.health().await {
            Ok(()) => "ok".to_string(),
            Err(e) if self.auth.authenticated_grpc(&req) => format!("unavailable: {e}"),
            Err(_) => "unavailable".to_string(),
        };
        Ok(Response::new(pb::HealthCheckResponse { status }))
    }

    async fn search_tasks(
        &self,
        req: Request<pb::SearchTasksRequest>,
    ) -> Result<Response<pb::SearchTasksResponse>, Status> {
        self.auth.check(&req)?;
        let a = self.service.bounded(self.service.tasks()).await?;
        Ok(Response::new(pb::SearchTasksResponse {
            task_names: a.task_names,
            tasks: a
                .tasks
                .into_iter()
                .map(|t| pb::TaskInfo {
                    name: t.name,
                    kind: t.kind,
                    algorithm: t.algorithm.unwrap_or_default(),
                    key: t.key.iter().map(|d| d.to_string()).collect(),
                    window_ns: t.window_ns,
                    run_id: t.run_id,
                })
                .collect(),
        }))
    }

    async fn aggregate_flows(
        &self,
        req: Request<pb::AggregationRequest>,
    ) -> Result<Response<pb::QueryTotalCountsResponse>, Status> {
        self.auth.check(&req)?;
        let r = req.into_inner();
        let ask = fields!(r, None).ask(&self.service)?;
        let a = self.service.bounded(self.service.aggregate(&ask)).await?;
        Ok(Response::new(pb::QueryTotalCountsResponse {
            summaries: a
                .summaries
                .into_iter()
                .map(|s| pb::TaskSummary {
                    task_name: s.task_name,
                    total_bytes: s.total_bytes,
                    total_packets: s.total_packets,
                    flow_count: s.flow_count,
                    first_seen: s.first_seen.and_then(stamp),
                    last_seen: s.last_seen.and_then(stamp),
                })
                .collect(),
        }))
    }

    async fn trace_flow(
        &self,
        req: Request<pb::TraceFlowRequest>,
    ) -> Result<Response<pb::TraceFlowResponse>, Status> {
        self.auth.check(&req)?;
        let r = req.into_inner();
        let mut input = Fields {
            task: r.task_name,
            start: r.start_time,
            end: r.end_time,
            src_ip: String::new(),
            dst_ip: String::new(),
            src_port: None,
            dst_port: None,
            protocol: None,
            limit: None,
            run: r.run,
        };
        let mut keys: Vec<_> = r.flow_keys.into_iter().collect();
        keys.sort();
        for (name, value) in keys {
            let number = || -> Result<Option<u32>, ApiError> {
                value
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(format!("flow key {name}: `{value}` is not a number")))
            };
            match name.to_ascii_lowercase().as_str() {
                "srcip" | "src_ip" => input.src_ip = value.clone(),
                "dstip" | "dst_ip" => input.dst_ip = value.clone(),
                "srcport" | "src_port" => input.src_port = number()?,
                "dstport" | "dst_port" => input.dst_port = number()?,
                "protocol" => input.protocol = number()?,
                _ => {
                    return Err(bad(format!(
                    "unsupported flow key `{name}`; use SrcIP, DstIP, SrcPort, DstPort, Protocol"
                ))
                    .into())
                }
            }
        }
        let ask = input.ask(&self.service)?;
        let l = self
            .service
            .bounded(self.service.trace(&ask))
            .await?
            .lifecycle;
        Ok(Response::new(pb::TraceFlowResponse {
            lifecycle: Some(pb::FlowLifecycle {
                first_seen: stamp(l.first_seen),
                last_seen: stamp(l.last_seen),
                total_packets: l.total_packets,
                total_bytes: l.total_bytes,
                windows: l.windows,
            }),
        }))
    }

    async fn query_heavy_hitters(
        &self,
        req: Request<pb::HeavyHittersRequest>,
    ) -> Result<Response<pb::HeavyHittersResponse>, Status> {
        self.auth.check(&req)?;
        let r = req.into_inner();
        let by = match r.r#type {
            0 => Some(Measure::Packets),
            1 => Some(Measure::Bytes),
            2 => None,
            t => {
                return Err(bad(format!(
                    "type {t} is not a measure; use 0 (count), 1 (size) or 2 (super-spreaders)"
                ))
                .into())
            }
        };
        let limit = r
            .limit
            .map(|l| u64::try_from(l).map_err(|_| bad(format!("limit {l} is negative"))))
            .transpose()?;
        let ask = fields!(r, limit).ask(&self.service)?;
        // (key, estimate, error bound, periods) whatever the sketch.
        let (rows, truncated, partial) = match by {
            Some(by) => {
                let a = self
                    .service
                    .bounded(self.service.heavy_hitters(&ask, by))
                    .await?;
                let rows = a.rows.into_iter().map(|h| {
                    let value = h.packets.or(h.bytes).unwrap_or(0);
                    (h.key, value, h.error_bound, h.periods)
                });
                (rows.collect::<Vec<_>>(), a.truncated, a.partial)
            }
            None => {
                let a = self
                    .service
                    .bounded(self.service.super_spreaders(&ask))
                    .await?;
                let rows = a
                    .rows
                    .into_iter()
                    .map(|s| (s.key, s.distinct, s.error_bound, s.periods));
                (rows.collect::<Vec<_>>(), a.truncated, a.partial)
            }
        };
        Ok(Response::new(pb::HeavyHittersResponse {
            hitters: rows
                .into_iter()
                .map(|(key, value, error_bound, periods)| pb::HeavyHitter {
                    flow: flow_text(&key),
                    value,
                    key: key_map(key),
                    error_bound,
                    periods,
                })
                .collect(),
            truncated,
            partial: partial.unwrap_or(false),
        }))
    }

    async fn top_keys(
        &self,
        req: Request<pb::TopKeysRequest>,
    ) -> Result<Response<pb::TopKeysResponse>, Status> {
        self.auth.check(&req)?;
        let r = req.into_inner();
        let by = match r.by.to_ascii_lowercase().as_str() {
            "" | "packets" => Measure::Packets,
            "bytes" => Measure::Bytes,
            other => {
                return Err(bad(format!(
                    "by `{other}` is not a measure; use packets or bytes"
                ))
                .into())
            }
        };
        let limit = r.limit.map(u64::from);
        let ask = fields!(r, limit).ask(&self.service)?;
        let a = self.service.bounded(self.service.top(&ask, by)).await?;
        Ok(Response::new(pb::TopKeysResponse {
            rows: a
                .rows
                .into_iter()
                .map(|f| pb::FlowRow {
                    key: key_map(f.key),
                    packets: f.packets,
                    bytes: f.bytes,
                    first_seen: stamp(f.first_seen),
                    last_seen: stamp(f.last_seen),
                    windows: f.windows,
                })
                .collect(),
            truncated: a.truncated,
        }))
    }

    async fn query_super_spreaders(
        &self,
        req: Request<pb::SuperSpreadersRequest>,
    ) -> Result<Response<pb::SuperSpreadersResponse>, Status> {
        self.auth.check(&req)?;
        let r = req.into_inner();
        let limit = r.limit.map(u64::from);
        let ask = fields!(r, limit).ask(&self.service)?;
        let a = self
            .service
            .bounded(self.service.super_spreaders(&ask))
            .await?;
        Ok(Response::new(pb::SuperSpreadersResponse {
            rows: a
                .rows
                .into_iter()
                .map(|s| pb::SuperSpreader {
                    key: key_map(s.key),
                    distinct: s.distinct,
                    error_bound: s.error_bound,
                    periods: s.periods,
                })
                .collect(),
            truncated: a.truncated,
            partial: a.partial.unwrap_or(false),
        }))
    }

    async fn time_series(
        &self,
        req: Request<pb::TimeSeriesRequest>,
    ) -> Result<Response<pb::TimeSeriesResponse>, Status> {
        self.auth.check(&req)?;
        let r = req.into_inner();
        let limit = r.limit.map(u64::from);
        let ask = fields!(r, limit).ask(&self.service)?;
        let a = self.service.bounded(self.service.timeseries(&ask)).await?;
        Ok(Response::new(pb::TimeSeriesResponse {
            rows: a
                .rows
                .into_iter()
                .map(|p| pb::SeriesPoint {
                    window_start: stamp(p.window_start),
                    window_end: stamp(p.window_end),
                    packets: p.packets,
                    bytes: p.bytes,
                    keys: p.keys,
                })
                .collect(),
            truncated: a.truncated,
        }))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.auth.check(&req)?;
        let limit = req.into_inner().limit.map(u64::from);
        let a = self.service.bounded(self.service.runs(limit)).await?;
        Ok(Response::new(pb::ListRunsResponse {
            rows: a
                .rows
                .into_iter()
                .map(|r| pb::Run {
                    run_id: r.run_id,
                    engine_id: r.engine_id,
                    command: r.command,
                    status: r.status,
                    started_at: stamp(r.started_at),
                    finished_at: r.finished_at.and_then(stamp),
                    packets: r.packets,
                    bytes: r.bytes,
                })
                .collect(),
            truncated: a.truncated,
        }))
    }

    async fn list_alerts(
        &self,
        req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        self.auth.check(&req)?;
        let r = req.into_inner();
        let filter = crate::ask::alert_filter(
            (ns("start_time", r.start_time)?, ns("end_time", r.end_time)?),
            text(r.rule),
            text(r.state),
            text(r.key),
            r.active,
            r.limit.map(u64::from),
            self.service.limits(),
        )?;
        let (found, truncated) = self.service.bounded(self.service.alerts(&filter)).await?;
        let alerts = found.iter().map(crate::ai_grpc::alerts::to_pb).collect();
        Ok(Response::new(pb::ListAlertsResponse { alerts, truncated }))
    }
}

/// Go2NetSpectra's `v1.QueryService`: its five methods answered by the
/// same implementation (same messages on the wire, see
/// `go2netspectra/v1/query.proto`), so the reference's clients work as is.
pub struct Reference(pub Arc<Grpc>);

#[tonic::async_trait]
impl crate::go2netspectra::query_service_server::QueryService for Reference {
    async fn health_check(
        &self,
        req: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        Native::health_check(&*self.0, req).await
    }

    async fn search_tasks(
        &self,
        req: Request<pb::SearchTasksRequest>,
    ) -> Result<Response<pb::SearchTasksResponse>, Status> {
        Native::search_tasks(&*self.0, req).await
    }

    async fn aggregate_flows(
        &self,
        req: Request<pb::AggregationRequest>,
    ) -> Result<Response<pb::QueryTotalCountsResponse>, Status> {
        Native::aggregate_flows(&*self.0, req).await
    }

    async fn trace_flow(
        &self,
        req: Request<pb::TraceFlowRequest>,
    ) -> Result<Response<pb::TraceFlowResponse>, Status> {
        Native::trace_flow(&*self.0, req).await
    }

    async fn query_heavy_hitters(
        &self,
        req: Request<pb::HeavyHittersRequest>,
    ) -> Result<Response<pb::HeavyHittersResponse>, Status> {
        Native::query_heavy_hitters(&*self.0, req).await
    }
}
