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
    /// The ping (TTL twice the ping interval), and a sharding follower's
    /// part: what this peer knows without asking anyone.
    fn liveness(&self) -> Vec<MetricWire> {
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
        metrics
    }

    /// Every configured informer's metric. A failing informer is left out,
    /// never a stale value.
    async fn collect(&self) -> Vec<MetricWire> {
        use crate::ipfsconn::IpfsConnector;
        let mut metrics = Vec::new();
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
///
/// The ping goes out on its own beat. The informers ask the IPFS daemon
/// (`repo/stat`; `numpin` lists every pin it holds), which can take longer
/// than the ping lives (two intervals) on a busy daemon or a large pinset:
/// a ping waiting on them would expire on the other peers, which would
/// then see this live peer as down, raise an alert, and with repinning on
/// move its pins away. The reference sends its pings on their own loop too.
pub async fn publish_metrics(informers: Informers, network: Network, monitor: Monitor) {
    let interval = informers.ping_interval.max(Duration::from_millis(100));
    // `metrics_wanted` wakes one waiter: the ping loop, which passes it on.
    let wanted = tokio::sync::Notify::new();
    let pings = async {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = monitor.metrics_wanted() => wanted.notify_one(),
            }
            if network.publish_metrics(informers.liveness()).await.is_err() {
                return; // shutting down
            }
        }
    };
    let measures = async {
        let mut tick = tokio::time::interval(interval);
        // A collection that outlasts the interval is followed by the next
        // one a full interval later, not by a burst of the missed ticks.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wanted.notified() => {}
            }
            let metrics = informers.collect().await;
            if !metrics.is_empty() && network.publish_metrics(metrics).await.is_err() {
                return;
            }
        }
    };
    // Either loop ends only when the network has shut down.
    tokio::select! {
        _ = pings => {}
        _ = measures => {}
    }
}
