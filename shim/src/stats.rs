//! Task stats: runc's `events --stats` JSON turned into containerd's cgroup
//! v1 `Metrics` message (the type containerd 1.6 decodes for Linux tasks on
//! a cgroup v1 host; on cgroup v2 runc reports the same JSON fields).

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use serde_json::Value;

use crate::error::{Result, ShimError};

const METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub fn metrics(event: &Value) -> Metrics {
    let d = &event["data"];
    let mut m = Metrics::new();
    m.pids = Some(PidsStat {
        current: u(&d["pids"]["current"]),
        limit: u(&d["pids"]["limit"]),
        ..Default::default()
    })
    .into();
    let usage = &d["cpu"]["usage"];
    m.cpu = Some(CPUStat {
        usage: Some(CPUUsage {
            total: u(&usage["total"]),
            kernel: u(&usage["kernel"]),
            user: u(&usage["user"]),
            per_cpu: usage["percpu"]
                .as_array()
                .map(|a| a.iter().map(u).collect())
                .unwrap_or_default(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    let mem = &d["memory"];
    let entry = |e: &Value| {
        Some(MemoryEntry {
            usage: u(&e["usage"]),
            max: u(&e["max"]),
            limit: u(&e["limit"]),
            failcnt: u(&e["failcnt"]),
            ..Default::default()
        })
        .into()
    };
    m.memory = Some(MemoryStat {
        cache: u(&mem["cache"]),
        rss: u(&mem["raw"]["rss"]),
        usage: entry(&mem["usage"]),
        swap: entry(&mem["swap"]),
        kernel: entry(&mem["kernel"]),
        ..Default::default()
    })
    .into();
    m
}

pub fn to_any(m: &Metrics) -> Result<Any> {
    Ok(Any {
        type_url: METRICS_TYPE.to_string(),
        value: m
            .write_to_bytes()
            .map_err(|e| ShimError::Runtime(format!("encode metrics: {e}")))?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_stats_json_maps_to_metrics() {
        let ev: Value = serde_json::from_str(
            r#"{"type":"stats","id":"c","data":{"cpu":{"usage":{"total":10,"percpu":[4,6],"kernel":3,"user":7}},
               "memory":{"cache":5,"usage":{"usage":100,"max":150,"limit":1000,"failcnt":0},"raw":{"rss":42}},
               "pids":{"current":2,"limit":512}}}"#,
        )
        .unwrap();
        let m = metrics(&ev);
        assert_eq!((m.pids.current, m.pids.limit), (2, 512));
        assert_eq!(m.cpu.usage.total, 10);
        assert_eq!(m.cpu.usage.per_cpu, vec![4, 6]);
        assert_eq!(
            (m.memory.usage.usage, m.memory.usage.limit, m.memory.rss),
            (100, 1000, 42)
        );
        assert_eq!(to_any(&m).unwrap().type_url, METRICS_TYPE);
    }
}
