//! [`KuboConnector`]: the Kubo RPC client. One `reqwest::Client` keeps
//! connections to the daemon alive across calls; every call is a POST.
//!
//! After more than ten consecutive failures to reach the daemon, requests
//! go out at most once a second until one gets through, as in the
//! reference, so a peer whose daemon is down does not spin on it.

use std::collections::VecDeque;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cid::Cid;
use futures::Stream;
use libp2p::{Multiaddr, PeerId};
use reqwest::{Response, Url};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::ndjson::{ReadError, ResponseLines};

use super::wire::{
    self, BlockPutReply, GcLine, IdReply, PinAddLine, PinLsLine, RepoStatReply, ResolveReply,
    SwarmPeersReply, VersionReply,
};
use super::{
    BlockFormat, IpfsConnConfig, IpfsConnector, IpfsError, IpfsId, PinMode, PinProgress, RepoGc,
    RepoStat,
};

/// Consecutive failures to reach the daemon after which requests are
/// throttled.
const FAILURES_BEFORE_THROTTLE: u32 = 10;
/// The pace of requests while throttled.
const THROTTLE_INTERVAL: Duration = Duration::from_secs(1);
/// The largest non-streamed reply we read (a streamed one is read line by
/// line, each at most [`crate::ndjson::MAX_LINE`]).
const MAX_REPLY: usize = 16 << 20;
/// How much of an error reply we keep for its message.
const MAX_ERROR_REPLY: usize = 64 << 10;

/// A client of the Kubo RPC API at `node_multiaddress`. Cheap to clone:
/// clones share the connection pool and the failure count.
#[derive(Debug, Clone)]
pub struct KuboConnector {
    http: reqwest::Client,
    base: Url,
    cfg: IpfsConnConfig,
    limiter: Arc<Limiter>,
}

impl KuboConnector {
    /// A connector for `cfg.node`. Nothing is sent until the first call.
    pub fn new(cfg: IpfsConnConfig) -> Result<Self, IpfsError> {
        let base = wire::api_base(&cfg.node)?;
        // The daemon sits beside the peer: never through an HTTP proxy
        // from the environment (Go's client also skips it for loopback).
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(cfg.request_timeout)
            .build()
            .map_err(|e| IpfsError::Unreachable {
                url: base.to_string(),
                detail: error_chain(&e),
            })?;
        Ok(KuboConnector {
            http,
            base,
            cfg,
            limiter: Arc::new(Limiter::new()),
        })
    }

    /// How many requests in a row failed to reach the daemon; above ten,
    /// requests are throttled to one a second.
    pub fn consecutive_failures(&self) -> u32 {
        self.limiter.failures.load(Ordering::Relaxed)
    }

    fn url(&self, cmd: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{cmd}", self.base.path()));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// POSTs to `url`. A reply with an error status becomes
    /// [`IpfsError::Daemon`], or [`IpfsError::Unsupported`] for a 404: both
    /// daemons answer 404 only to commands they do not have.
    async fn send(
        &self,
        op: &'static str,
        url: Url,
        body: Option<(String, reqwest::Body)>,
    ) -> Result<Response, IpfsError> {
        self.limiter.wait().await;
        let mut req = self.http.post(url.clone());
        if let Some((content_type, bytes)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let res = match req.send().await {
            Ok(res) => {
                self.limiter.succeeded();
                res
            }
            Err(e) => {
                let failures = self.limiter.failed();
                if failures == FAILURES_BEFORE_THROTTLE + 1 {
                    tracing::warn!(
                        %url,
                        failures,
                        "IPFS daemon keeps failing: one request a second until it answers"
                    );
                }
                return Err(unreachable(&url, &e));
            }
        };
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(IpfsError::Unsupported { op });
        }
        // An error body cut short still leaves the status to report.
        let body = read_capped(res, MAX_ERROR_REPLY).await.unwrap_or_default();
        Err(IpfsError::Daemon {
            op,
            status: status.as_u16(),
            message: wire::error_message(&body),
        })
    }

    /// POSTs and reads the whole (bounded) reply.
    async fn call_raw(
        &self,
        op: &'static str,
        url: Url,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Vec<u8>, IpfsError> {
        let body = body.map(|(content_type, bytes)| (content_type, bytes.into()));
        let res = self.send(op, url.clone(), body).await?;
        let bytes = read_capped(res, MAX_REPLY + 1)
            .await
            .map_err(|e| unreachable(&url, &e))?;
        if bytes.len() > MAX_REPLY {
            return Err(IpfsError::Decode {
                op,
                detail: format!("the reply is longer than {MAX_REPLY} bytes"),
            });
        }
        Ok(bytes)
    }

    /// `add` without pinning: streams `body`, a multipart form whose
    /// `content_type` carries the boundary, to the daemon with the
    /// chunking options of `query`, and hands back its output as it comes.
    /// The body is never held whole: it flows as the client sends it. No
    /// overall timeout (a large add takes as long as it takes); a daemon
    /// that cannot be reached fails within the connect timeout.
    pub async fn add(
        &self,
        query: &[(&str, String)],
        content_type: String,
        body: reqwest::Body,
    ) -> Result<AddOutput, IpfsError> {
        const OP: &str = "add";
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = self.url(OP, &pairs);
        let res = self
            .send(OP, url.clone(), Some((content_type, body)))
            .await?;
        Ok(AddOutput(JsonLines::new(OP, res, url)))
    }

    /// `dag/import` of one CAR, without pinning its roots: `car` (the CAR's
    /// bytes) is sent as it is produced, framed as a one-file multipart
    /// form, and an error in it aborts the request. Returns once the daemon
    /// has stored every block; it reports nothing else, as neither daemon
    /// writes output when roots are not pinned. No overall timeout, as
    /// for `add`.
    pub async fn dag_import<S, E>(&self, car: S) -> Result<(), IpfsError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        use futures::StreamExt;
        const OP: &str = "dag/import";
        let boundary = format!("{:032x}", rand::random::<u128>());
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"import.car\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let framed = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) })
            .chain(car)
            .chain(futures::stream::once(async move {
                Ok(bytes::Bytes::from(tail))
            }));
        let url = self.url(OP, &[("pin-roots", "false"), ("allow-big-block", "true")]);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let res = self
            .send(
                OP,
                url.clone(),
                Some((content_type, reqwest::Body::wrap_stream(framed))),
            )
            .await?;
        let body = read_capped(res, MAX_ERROR_REPLY)
            .await
            .map_err(|e| unreachable(&url, &e))?;
        // A daemon that failed after answering 200 says so in a line.
        for line in body.split(|&b| b == b'\n') {
            let parsed = serde_json::from_slice::<wire::DagImportLine>(line);
            if let Some(message) = parsed.as_ref().ok().and_then(|l| l.error()) {
                return Err(daemon_in_stream(OP, message));
            }
        }
        Ok(())
    }

    /// A plain call with a JSON reply, bounded by `request_timeout`.
    async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        query: &[(&str, &str)],
    ) -> Result<T, IpfsError> {
        let url = self.url(op, query);
        let bytes = bounded(op, self.cfg.request_timeout, self.call_raw(op, url, None)).await?;
        decode(op, &bytes)
    }

    /// How `cid` is pinned, asking for pins of `kind` (`recursive`,
    /// `direct` or `all`).
    async fn pin_ls_one(&self, cid: &Cid, kind: &str) -> Result<Option<PinMode>, IpfsError> {
        const OP: &str = "pin/ls";
        let arg = cid.to_string();
        let url = self.url(OP, &[("stream", "true"), ("arg", &arg), ("type", kind)]);
        let res = match self.send(OP, url.clone(), None).await {
            Err(IpfsError::Daemon { message, .. }) if wire::is_not_pinned(&message) => {
                return Ok(None);
            }
            other => other?,
        };
        let mut lines = JsonLines::new(OP, res, url);
        while let Some(line) = lines.next::<PinLsLine>().await? {
            if let Some(message) = line.error() {
                if wire::is_not_pinned(message) {
                    return Ok(None);
                }
                return Err(daemon_in_stream(OP, message));
            }
            if let Some(keys) = line.keys {
                // The daemon may re-encode the CID (js-ipfs: base58), so
                // keys are compared as CIDs.
                for (key, info) in keys {
                    if Cid::try_from(key.as_str()).is_ok_and(|k| k == *cid) {
                        return Ok(wire::pin_mode(&info.kind));
                    }
                }
            } else if line.cid.is_some_and(|c| c.0 == *cid) {
                return Ok(line.kind.as_deref().and_then(wire::pin_mode));
            }
        }
        Ok(None)
    }

    /// `pin/add` with progress. The watchdog's deadline moves only when
    /// `Progress` grows: Kubo writes a line every 500 ms whatever happens
    /// (`{}` until the first block arrives, as `Progress` 0 is omitted, then
    /// the same `{"Progress":n}` while stuck), so counting lines or bytes as
    /// activity would never time out. js-ipfs
    /// sends no progress at all, only `{"Pins":...}` when done, so there the
    /// whole pin must finish within `pin_timeout`.
    /// Kubo's `Progress` (blocks fetched so far) goes to `progress`.
    async fn pin_add(
        &self,
        cid: &Cid,
        mode: PinMode,
        progress_to: &PinProgress,
    ) -> Result<(), IpfsError> {
        const OP: &str = "pin/add";
        let idle = self.cfg.pin_timeout;
        let timeout = || IpfsError::Timeout {
            op: OP,
            after: idle,
        };
        let arg = cid.to_string();
        let recursive = if mode == PinMode::Recursive {
            "true"
        } else {
            "false"
        };
        let url = self.url(
            OP,
            &[
                ("arg", &arg),
                ("recursive", recursive),
                ("progress", "true"),
            ],
        );
        let mut deadline = Instant::now() + idle;
        let res = match tokio::time::timeout_at(deadline, self.send(OP, url.clone(), None)).await {
            Err(_) => return Err(timeout()),
            // Kubo refuses a direct pin on a CID pinned recursively, which
            // already holds what a direct pin would.
            Ok(Err(IpfsError::Daemon { message, .. }))
                if mode == PinMode::Direct && message.contains("already pinned recursively") =>
            {
                return Ok(());
            }
            Ok(res) => res?,
        };
        let mut lines = JsonLines::new(OP, res, url);
        let mut progress = None;
        loop {
            let line = tokio::time::timeout_at(deadline, lines.next::<PinAddLine>())
                .await
                .map_err(|_| timeout())??;
            let Some(line) = line else {
                // Kubo reports a failure after the first progress line only
                // in the X-Stream-Error trailer: an end without `Pins` is
                // that failure.
                return Err(IpfsError::Decode {
                    op: OP,
                    detail: "the reply ended before the pin was confirmed".to_string(),
                });
            };
            if let Some(message) = line.error() {
                return Err(daemon_in_stream(OP, message));
            }
            if let Some(pins) = line.pins {
                if !pins.iter().any(|p| p.0 == *cid) {
                    tracing::debug!(%cid, ?pins, "pin/add confirmed other CIDs than asked");
                }
                return Ok(());
            }
            if let Some(p) = line.progress
                && progress.is_none_or(|last| p.0 > last)
            {
                progress = Some(p.0);
                progress_to.set_blocks(p.0);
                deadline = Instant::now() + idle;
            }
        }
    }
}

impl IpfsConnector for KuboConnector {
    async fn id(&self) -> Result<IpfsId, IpfsError> {
        let reply: IdReply = self.call("id", &[]).await?;
        let id = PeerId::from_str(&reply.id).map_err(|e| IpfsError::Decode {
            op: "id",
            detail: format!("bad peer id {:?}: {e}", reply.id),
        })?;
        let addresses = reply
            .addresses
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| match a.parse() {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::debug!(address = a, error = %e, "skipping a bad IPFS address");
                    None
                }
            })
            .collect();
        Ok(IpfsId { id, addresses })
    }

    async fn version(&self) -> Result<String, IpfsError> {
        let reply: VersionReply = self.call("version", &[]).await?;
        Ok(reply.version)
    }

    async fn pin_counting(
        &self,
        cid: &Cid,
        mode: PinMode,
        progress: &PinProgress,
    ) -> Result<(), IpfsError> {
        let check = bounded(
            "pin/ls",
            self.cfg.request_timeout,
            self.pin_ls_one(cid, mode.as_str()),
        )
        .await;
        match check {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            // As the reference: a daemon that cannot tell is asked to pin.
            Err(e @ (IpfsError::Daemon { .. } | IpfsError::Decode { .. })) => {
                tracing::debug!(%cid, error = %e, "pin check failed, pinning anyway");
            }
            Err(e) => return Err(e),
        }
        self.pin_add(cid, mode, progress).await
    }

    async fn unpin(&self, cid: &Cid) -> Result<(), IpfsError> {
        const OP: &str = "pin/rm";
        let arg = cid.to_string();
        let url = self.url(OP, &[("arg", &arg)]);
        match bounded(OP, self.cfg.unpin_timeout, self.call_raw(OP, url, None)).await {
            Ok(_) => Ok(()),
            Err(IpfsError::Daemon { message, .. }) if wire::is_not_pinned(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn pin_ls(&self) -> impl Stream<Item = Result<(Cid, PinMode), IpfsError>> + Send {
        let listing = PinListing {
            conn: self,
            kinds: [PinMode::Recursive, PinMode::Direct].into_iter(),
            current: None,
            pending: VecDeque::new(),
            deadline: Instant::now() + self.cfg.request_timeout,
            done: false,
        };
        futures::stream::unfold(listing, |mut listing| async move {
            let item = listing.next().await?;
            Some((item, listing))
        })
    }

    async fn pin_ls_cid(&self, cid: &Cid) -> Result<Option<PinMode>, IpfsError> {
        bounded(
            "pin/ls",
            self.cfg.request_timeout,
            self.pin_ls_one(cid, "all"),
        )
        .await
    }

    async fn pin_update(&self, from: &Cid, to: &Cid) -> Result<(), IpfsError> {
        const OP: &str = "pin/update";
        let (from_arg, to_arg) = (from.to_string(), to.to_string());
        let url = self.url(
            OP,
            &[("arg", &from_arg), ("arg", &to_arg), ("unpin", "false")],
        );
        // No progress is streamed, so the whole update gets `pin_timeout`.
        match bounded(OP, self.cfg.pin_timeout, self.call_raw(OP, url, None)).await {
            Ok(_) => Ok(()),
            Err(IpfsError::Unsupported { .. }) => {
                // js-ipfs: a plain pin of `to`; `from` stays pinned, as
                // `unpin=false` asks.
                tracing::debug!(%from, %to, "no pin/update on this daemon, pinning instead");
                self.pin(to, PinMode::Recursive).await
            }
            Err(e) => Err(e),
        }
    }

    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        let reply: RepoStatReply = self.call("repo/stat", &[("size-only", "true")]).await?;
        Ok(RepoStat {
            repo_size: reply.repo_size.0,
            storage_max: reply.storage_max.0,
        })
    }

    async fn repo_gc(&self) -> Result<RepoGc, IpfsError> {
        const OP: &str = "repo/gc";
        let url = self.url(OP, &[("stream-errors", "true")]);
        let run = async {
            let res = self.send(OP, url.clone(), None).await?;
            let mut lines = JsonLines::new(OP, res, url);
            let mut gc = RepoGc::default();
            while let Some(line) = lines.next::<GcLine>().await? {
                match (line.key, line.error) {
                    (_, Some(error)) if !error.is_empty() => gc.errors.push(error),
                    (Some(key), _) => gc.removed.push(key.0),
                    _ => {}
                }
            }
            Ok(gc)
        };
        bounded(OP, self.cfg.repogc_timeout, run).await
    }

    async fn block_put(&self, data: Vec<u8>, format: BlockFormat) -> Result<Cid, IpfsError> {
        const OP: &str = "block/put";
        let query = format.query()?;
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = self.url(OP, &pairs);
        let body = wire::multipart_file(&data);
        let bytes = bounded(
            OP,
            self.cfg.request_timeout,
            self.call_raw(OP, url, Some(body)),
        )
        .await?;
        let reply: BlockPutReply = decode(OP, &bytes)?;
        Ok(reply.key.0)
    }

    async fn swarm_peers(&self) -> Result<Vec<PeerId>, IpfsError> {
        const OP: &str = "swarm/peers";
        let reply: SwarmPeersReply = self.call(OP, &[]).await?;
        reply
            .peers
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                PeerId::from_str(&p.peer).map_err(|e| IpfsError::Decode {
                    op: OP,
                    detail: format!("bad peer id {:?}: {e}", p.peer),
                })
            })
            .collect()
    }

    async fn swarm_connect(&self, addr: &Multiaddr) -> Result<(), IpfsError> {
        const OP: &str = "swarm/connect";
        let arg = addr.to_string();
        let url = self.url(OP, &[("arg", &arg)]);
        bounded(OP, self.cfg.request_timeout, self.call_raw(OP, url, None)).await?;
        Ok(())
    }

    async fn resolve(&self, path: &str) -> Result<Cid, IpfsError> {
        const OP: &str = "resolve";
        if let Some(cid) = wire::bare_cid(path) {
            return Ok(cid);
        }
        let reply: ResolveReply = self.call(OP, &[("arg", path)]).await?;
        wire::bare_cid(&reply.path).ok_or_else(|| IpfsError::Decode {
            op: OP,
            detail: format!("resolved to {:?}, not /ipfs/<cid>", reply.path),
        })
    }
}

/// The state of a `pin_ls` stream: one `pin/ls` request per mode, in turn,
/// all within one `request_timeout`.
struct PinListing<'a> {
    conn: &'a KuboConnector,
    kinds: std::array::IntoIter<PinMode, 2>,
    /// The request being read, and the mode it asked for.
    current: Option<(JsonLines, PinMode)>,
    /// Pins from a non-streamed `{"Keys":...}` reply, handed out one by one.
    pending: VecDeque<(Cid, PinMode)>,
    deadline: Instant,
    done: bool,
}

impl PinListing<'_> {
    async fn next(&mut self) -> Option<Result<(Cid, PinMode), IpfsError>> {
        if self.done {
            return None;
        }
        let after = self.conn.cfg.request_timeout;
        let step = tokio::time::timeout_at(self.deadline, self.advance())
            .await
            .unwrap_or(Err(IpfsError::Timeout {
                op: "pin/ls",
                after,
            }));
        match step {
            Ok(Some(pin)) => Some(Ok(pin)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    async fn advance(&mut self) -> Result<Option<(Cid, PinMode)>, IpfsError> {
        const OP: &str = "pin/ls";
        loop {
            if let Some(pin) = self.pending.pop_front() {
                return Ok(Some(pin));
            }
            let Some((lines, wanted)) = self.current.as_mut() else {
                let Some(kind) = self.kinds.next() else {
                    return Ok(None);
                };
                let url = self
                    .conn
                    .url(OP, &[("stream", "true"), ("type", kind.as_str())]);
                let res = self.conn.send(OP, url.clone(), None).await?;
                self.current = Some((JsonLines::new(OP, res, url), kind));
                continue;
            };
            let wanted = *wanted;
            let Some(line) = lines.next::<PinLsLine>().await? else {
                self.current = None;
                continue;
            };
            if let Some(message) = line.error() {
                return Err(daemon_in_stream(OP, message));
            }
            // Only pins of the mode asked for are kept, so a daemon that
            // ignores `type` cannot list a pin twice.
            if let Some(keys) = line.keys {
                for (key, info) in keys {
                    if wire::pin_mode(&info.kind) != Some(wanted) {
                        continue;
                    }
                    let cid = Cid::try_from(key.as_str()).map_err(|e| IpfsError::Decode {
                        op: OP,
                        detail: format!("bad CID {key:?}: {e}"),
                    })?;
                    self.pending.push_back((cid, wanted));
                }
            } else if let (Some(cid), Some(mode)) =
                (line.cid, line.kind.as_deref().and_then(wire::pin_mode))
                && mode == wanted
            {
                return Ok(Some((cid.0, mode)));
            }
        }
    }
}

/// A streamed reply, decoded one JSON value per line as bytes arrive.
#[derive(Debug)]
struct JsonLines {
    op: &'static str,
    url: Url,
    lines: ResponseLines,
}

impl JsonLines {
    fn new(op: &'static str, res: Response, url: Url) -> Self {
        JsonLines {
            op,
            url,
            lines: ResponseLines::new(res),
        }
    }

    /// The next value, or `None` at the end of the reply.
    async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, IpfsError> {
        match self.lines.next_line().await {
            Ok(Some(line)) => decode(self.op, line).map(Some),
            Ok(None) => Ok(None),
            Err(e @ (ReadError::TooLong(_) | ReadError::Stream(_))) => Err(IpfsError::Decode {
                op: self.op,
                detail: e.to_string(),
            }),
            Err(ReadError::Transport(e)) => Err(unreachable(&self.url, &e)),
        }
    }
}

/// Decodes one value as `T`, naming the command on failure.
fn decode<T: DeserializeOwned>(op: &'static str, bytes: &[u8]) -> Result<T, IpfsError> {
    serde_json::from_slice(bytes).map_err(|e| IpfsError::Decode {
        op,
        detail: e.to_string(),
    })
}

/// The output of [`KuboConnector::add`], line by line.
#[derive(Debug)]
pub struct AddOutput(JsonLines);

/// One line of `add`'s output: an added node, or progress (`bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedLine {
    /// The path relative to the input (`""` for a single unnamed input).
    pub name: String,
    /// The node's CID; `None` on progress lines.
    pub cid: Option<Cid>,
    /// The node's cumulative size.
    pub size: u64,
    /// Bytes read so far, on progress lines.
    pub bytes: u64,
}

impl AddOutput {
    /// The next line, `None` at the end; an error line of the daemon is an
    /// error.
    pub async fn next(&mut self) -> Result<Option<AddedLine>, IpfsError> {
        let Some(line) = self.0.next::<wire::AddLine>().await? else {
            return Ok(None);
        };
        if let Some(message) = line.error() {
            return Err(IpfsError::Daemon {
                op: "add",
                status: 200,
                message: message.to_string(),
            });
        }
        let cid = match line.hash.as_deref() {
            Some(h) => Some(Cid::from_str(h).map_err(|e| IpfsError::Decode {
                op: "add",
                detail: format!("bad CID {h:?}: {e}"),
            })?),
            None => None,
        };
        Ok(Some(AddedLine {
            name: line.name,
            cid,
            size: line.size.map_or(0, |s| s.0),
            bytes: line.bytes.map_or(0, |b| b.0),
        }))
    }
}

/// The failure count and the throttle's next free slot.
#[derive(Debug)]
struct Limiter {
    failures: AtomicU32,
    next_slot: tokio::sync::Mutex<Instant>,
}

impl Limiter {
    fn new() -> Self {
        Limiter {
            failures: AtomicU32::new(0),
            next_slot: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits for a slot when throttled. Waiters queue on the lock, so they
    /// leave one a second.
    async fn wait(&self) {
        if self.failures.load(Ordering::Relaxed) <= FAILURES_BEFORE_THROTTLE {
            return;
        }
        let mut slot = self.next_slot.lock().await;
        tokio::time::sleep_until(*slot).await;
        *slot = Instant::now() + THROTTLE_INTERVAL;
    }

    fn failed(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
}

/// Runs `fut` for at most `after`.
async fn bounded<T>(
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, IpfsError>>,
) -> Result<T, IpfsError> {
    tokio::time::timeout(after, fut)
        .await
        .unwrap_or(Err(IpfsError::Timeout { op, after }))
}

/// Reads a reply body, stopping after `limit` bytes.
async fn read_capped(mut res: Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        let room = limit - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

fn unreachable(url: &Url, e: &reqwest::Error) -> IpfsError {
    IpfsError::Unreachable {
        url: url.to_string(),
        detail: error_chain(e),
    }
}

fn daemon_in_stream(op: &'static str, message: &str) -> IpfsError {
    IpfsError::Daemon {
        op,
        // The error came inside a successful (200) streamed reply.
        status: 200,
        message: message.to_string(),
    }
}

/// An error and its causes, `: `-separated: reqwest's own message alone
/// ("error sending request") hides whether the connection was refused.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_names_the_command() {
        let err = decode::<serde_json::Value>("id", b"{nope").unwrap_err();
        assert!(matches!(err, IpfsError::Decode { op: "id", .. }));
    }
}
