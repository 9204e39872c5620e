//! What this peer measures about itself and publishes to the others over
//! the metrics topic: the `ping` (liveness, and which IPFS daemon is
//! ours), and the configured informers' metrics (`freespace` or
//! `reposize`, `tag:*`, `numpin`, `pinqueue`) the allocator ranks peers by.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::cluster::SeenDaemon;
use crate::config::InformerConfig;
use crate::ipfsconn::Connector;
use crate::monitor::{self, MetricWire, Monitor};
use crate::network::Network;
use crate::pintracker::PinTracker;

/// What this peer measures about itself.
#[derive(Debug)]
pub struct Informers {
    /// The IPFS daemon beside this peer.
    pub ipfs: Connector,
    /// This peer's pin queue.
    pub tracker: PinTracker<Connector>,
    /// The daemon as last seen (the ping names it).
    pub seen: SeenDaemon,
    /// This peer's name.
    pub peername: String,
    /// How often the metrics go out.
    pub ping_interval: Duration,
    /// Which informers are on.
    pub informers: InformerConfig,
    /// A sharding follower's part, announced as the `shard` metric.
    pub shard: Option<crate::allocator::shard::ShardSettings>,
}

impl Informers {
    /// The ping (TTL twice the ping interval) and every configured
    /// informer's metric. A failing informer is left out, never a stale value.
    async fn collect(&self) -> Vec<MetricWire> {
        use crate::ipfsconn::IpfsConnector;
        let (ipfs_id, addrs) = self.seen.lock().map(|g| g.clone()).unwrap_or_default();
        let addrs: Vec<String> = addrs.iter().map(Multiaddr::to_string).collect();
        let mut metrics = vec![monitor::ping(
            self.ping_interval * 2,
            &self.peername,
            &ipfs_id,
            &addrs,
        )];
        if let Some(shard) = self.shard {
            metrics.push(crate::allocator::shard::shard_metric(
                shard,
                self.ping_interval * 2,
            ));
        }
        let ttl_ms = |d: Duration| d.as_millis() as u64;
        if let Some(disk) = &self.informers.disk
            && let Ok(stat) = self.ipfs.repo_stat().await
        {
            let (name, value) = match disk.metric_type {
                crate::config::DiskMetricType::Freespace => {
                    ("freespace", stat.storage_max.saturating_sub(stat.repo_size))
                }
                crate::config::DiskMetricType::Reposize => ("reposize", stat.repo_size),
            };
            metrics.push(MetricWire {
                name: name.into(),
                value: value.to_string(),
                ttl_ms: ttl_ms(disk.metric_ttl.0),
                // No limit configured on the daemon: nothing to compare.
                valid: value > 0,
                weight: i64::try_from(value).unwrap_or(i64::MAX),
                partitionable: false,
            });
        }
        if let Some(tags) = &self.informers.tags {
            for (tag, value) in &tags.tags {
                metrics.push(MetricWire {
                    name: format!("tag:{tag}"),
                    value: value.clone(),
                    ttl_ms: ttl_ms(tags.metric_ttl.0),
                    valid: true,
                    weight: 0,
                    partitionable: true,
                });
            }
        }
        if let Some(numpin) = &self.informers.numpin {
            use futures::StreamExt;
            // Counted off the stream: the list itself is never held. A
            // failed listing sends no metric rather than a wrong count.
            let mut pins = std::pin::pin!(self.ipfs.pin_ls());
            let mut count = Ok(0u64);
            while let Some(item) = pins.next().await {
                match item {
                    Ok(_) => count = count.map(|n| n + 1),
                    Err(e) => {
                        count = Err(e);
                        break;
                    }
                }
            }
            if let Ok(count) = count {
                metrics.push(MetricWire {
                    name: "numpin".into(),
                    value: count.to_string(),
                    ttl_ms: ttl_ms(numpin.metric_ttl.0),
                    valid: true,
                    // Fewer pins ranks first, should anyone allocate by it.
                    weight: -i64::try_from(count).unwrap_or(i64::MAX),
                    partitionable: false,
                });
            }
        }
        if let Some(queue) = &self.informers.pinqueue {
            let len = self.tracker.queued() as u64;
            metrics.push(MetricWire {
                name: "pinqueue".into(),
                value: len.to_string(),
                ttl_ms: ttl_ms(queue.metric_ttl.0),
                valid: true,
                weight: -i64::try_from(len / queue.weight_bucket_size.max(1)).unwrap_or(i64::MAX),
                partitionable: false,
            });
        }
        metrics
    }
}

/// Publishes this peer's metrics every ping interval, and at once when a
/// peer subscribes to them.
pub async fn publish_metrics(informers: Informers, network: Network, monitor: Monitor) {
    let mut tick = tokio::time::interval(informers.ping_interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = monitor.metrics_wanted() => {}
        }
        let metrics = informers.collect().await;
        if network.publish_metrics(metrics).await.is_err() {
            return; // shutting down
        }
    }
}
