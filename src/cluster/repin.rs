//! The task that watches the metrics: it raises alerts for expired ones,
//! and when a peer's `ping` expires (it went down) and repinning is on,
//! moves this peer's share of the dead peer's pins to live peers
//! ([`Cluster::reallocate`] with [`Share::Mine`]).

use std::time::Duration;

use super::Cluster;
use super::peers::Share;
use crate::monitor::Monitor;

/// Raises alerts for expired metrics; a `ping` alert re-allocates the
/// peer's pins when `repin` is given. It wakes when the earliest metric
/// expires (so a dead peer is reported within its ping TTL, twice the ping
/// interval) and at least every `every`.
pub async fn check_metrics(monitor: Monitor, every: Duration, repin: Option<Cluster>) {
    let every = every.max(Duration::from_millis(100));
    // Re-allocations under way: they stop with this task.
    let mut moving = tokio::task::JoinSet::new();
    loop {
        while moving.try_join_next().is_some() {}
        let now = chrono::Utc::now();
        let wait = monitor
            .next_expiry()
            .map(|at| (at - now).to_std().unwrap_or_default())
            .map_or(every, |until| until.min(every))
            // Never spin: expiries are judged in whole milliseconds anyway.
            .max(Duration::from_millis(10));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = monitor.metrics_recorded() => {}
        }
        for alert in monitor.check(chrono::Utc::now()) {
            tracing::warn!(peer = %alert.metric.peer, metric = %alert.metric.name, "metric expired");
            if alert.metric.name != "ping" {
                continue;
            }
            if let (Some(cluster), Ok(down)) = (&repin, alert.metric.peer.parse()) {
                let cluster = cluster.clone();
                moving.spawn(async move {
                    match cluster.reallocate(down, Share::Mine).await {
                        Ok(0) => {}
                        Ok(moved) => tracing::info!(%down, pins = moved, "re-allocated the pins of a peer that went down"),
                        Err(e) => tracing::warn!(%down, error = %e, "re-allocation incomplete"),
                    }
                });
            }
        }
    }
}
