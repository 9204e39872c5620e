//! One peer's side of the engine: the writer task (one outbound stream,
//! reopened when it breaks, carrying our wants and the server's replies),
//! the reader tasks (one per inbound stream, each message bounded in size
//! and time), and the dispatch of a received message to the server (its
//! wants) and the client (its blocks and presences).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use libp2p::{PeerId, Stream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::behaviour::InboundStreams;
use super::message::{Message, Version, WantEntry, put_varint};
use super::server::TheirWants;
use super::{Inner, Ledger, lock};

/// Replies the server may queue ahead of the writer (each about
/// `target_message_size`).
const REPLY_QUEUE: usize = 2;
/// Messages of one peer read at the same time.
const READS_PER_PEER: usize = 2;
/// Longest wait for an outbound stream.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Blocks and presences the server sends in one message.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub blocks: Vec<(Cid, Bytes)>,
    pub presences: Vec<(Cid, super::message::Presence)>,
}

/// What the engine keeps for a peer it talks to.
pub(crate) struct PeerState {
    pub peer: PeerId,
    pub ledger: Arc<Ledger>,
    /// Our wants and cancels not yet written, by CID (the latest wins).
    wants_out: std::sync::Mutex<HashMap<Cid, WantEntry>>,
    /// The next message replaces the peer's copy of our wantlist.
    full: AtomicBool,
    wake_writer: Notify,
    pub replies: mpsc::Sender<Reply>,
    /// What the peer wants from us.
    pub their_wants: std::sync::Mutex<TheirWants>,
    pub wake_server: Notify,
    reads: Arc<Semaphore>,
    pub cancel: CancellationToken,
}

impl PeerState {
    /// Queues want or cancel entries for the writer.
    pub fn send_wants(&self, entries: impl IntoIterator<Item = WantEntry>, full: bool) {
        {
            let mut out = lock(&self.wants_out);
            if full {
                out.clear();
                self.full.store(true, Ordering::Release);
            }
            for e in entries {
                out.insert(e.cid, e);
            }
        }
        self.wake_writer.notify_one();
    }

    pub fn their_wants_len(&self) -> usize {
        lock(&self.their_wants).len()
    }
}

/// The peer's state, created (with its writer and server tasks) on first
/// use.
pub(crate) fn state(inner: &Arc<Inner>, peer: PeerId) -> Arc<PeerState> {
    let mut peers = lock(&inner.peers);
    if let Some(s) = peers.get(&peer) {
        return s.clone();
    }
    let (replies, replies_rx) = mpsc::channel(REPLY_QUEUE);
    let state = Arc::new(PeerState {
        peer,
        ledger: inner.ledger(peer),
        wants_out: Default::default(),
        full: AtomicBool::new(false),
        wake_writer: Notify::new(),
        replies,
        their_wants: std::sync::Mutex::new(TheirWants::default()),
        wake_server: Notify::new(),
        reads: Arc::new(Semaphore::new(READS_PER_PEER)),
        cancel: inner.cancel.child_token(),
    });
    peers.insert(peer, state.clone());
    drop(peers);
    inner
        .tasks
        .spawn(writer(inner.clone(), state.clone(), replies_rx));
    inner
        .tasks
        .spawn(super::server::serve(inner.clone(), state.clone()));
    state
}

/// Accepts inbound streams and starts a reader for each.
pub(crate) async fn accept(inner: Arc<Inner>, mut inbound: InboundStreams) {
    loop {
        let next = tokio::select! {
            biased;
            _ = inner.cancel.cancelled() => return,
            next = inbound.next() => next,
        };
        let Some((peer, stream, version)) = next else {
            return;
        };
        let state = state(&inner, peer);
        inner
            .tasks
            .spawn(read_stream(inner.clone(), state, stream, version));
    }
}

/// Why reading a stream stopped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("stream closed")]
    Closed,
    #[error("message of {0} bytes is over the limit")]
    TooLarge(u64),
    #[error("message body not received within {0:?}")]
    Slow(Duration),
    #[error("bad length prefix")]
    BadLength,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn read_len(r: &mut BufReader<Stream>) -> Result<u64, ReadError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        match r.read(&mut b).await? {
            0 => return Err(ReadError::Closed),
            _ => {
                v |= u64::from(b[0] & 0x7f) << (7 * i);
                if b[0] & 0x80 == 0 {
                    return Ok(v);
                }
            }
        }
    }
    Err(ReadError::BadLength)
}

/// Reads a stream's messages and hands each, in order, to a handler task
/// of its own: the blocks of one message are hashed and stored while the
/// next one arrives. A message's read permit goes with it until it is
/// handled, so a peer has at most [`READS_PER_PEER`] messages in memory.
async fn read_stream(inner: Arc<Inner>, state: Arc<PeerState>, stream: Stream, _: Version) {
    let (to_handler, mut messages) = mpsc::channel::<(Message, OwnedSemaphorePermit)>(1);
    let handler = {
        let (inner, state) = (inner.clone(), state.clone());
        async move {
            while let Some((msg, _permit)) = messages.recv().await {
                handle(&inner, &state, msg).await;
            }
        }
    };
    inner.tasks.spawn(handler);
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    loop {
        let read = async {
            let len = read_len(&mut r).await?;
            if len > inner.config.max_message_size as u64 {
                return Err(ReadError::TooLarge(len));
            }
            let permit = state
                .reads
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ReadError::Closed)?;
            // The body becomes the blocks' bytes in the store (no copy
            // after this one), so it is a buffer of its own each time.
            let mut body = vec![0u8; len as usize];
            tokio::time::timeout(inner.config.read_timeout, r.read_exact(&mut body))
                .await
                .map_err(|_| ReadError::Slow(inner.config.read_timeout))??;
            Ok((Bytes::from(body), permit))
        };
        let body = tokio::select! {
            biased;
            _ = state.cancel.cancelled() => return,
            body = read => body,
        };
        let (body, permit) = match body {
            Ok(b) => b,
            Err(ReadError::Closed) => return,
            Err(e) => {
                tracing::debug!(peer = %state.peer, "bitswap stream dropped: {e}");
                if !matches!(e, ReadError::Io(_)) {
                    Ledger::add(&state.ledger.messages_rejected, 1);
                }
                return;
            }
        };
        match Message::decode(body) {
            Ok(msg) => {
                if to_handler.send((msg, permit)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(peer = %state.peer, "bad bitswap message: {e}");
                Ledger::add(&state.ledger.messages_rejected, 1);
                return;
            }
        }
    }
}

/// A message from a peer: its wants to the server, its blocks and
/// presences to the client.
async fn handle(inner: &Arc<Inner>, state: &Arc<PeerState>, msg: Message) {
    if msg.full || !msg.wantlist.is_empty() {
        super::server::on_wants(inner, state, msg.full, msg.wantlist);
    }
    super::client::on_blocks(inner, state, msg.blocks).await;
    for (cid, presence) in msg.presences {
        super::client::on_presence(inner, state, cid, presence);
    }
}

/// The one writer of a peer's outbound stream.
async fn writer(inner: Arc<Inner>, state: Arc<PeerState>, mut replies: mpsc::Receiver<Reply>) {
    let mut stream: Option<(Stream, Version)> = None;
    loop {
        let mut reply = tokio::select! {
            biased;
            _ = state.cancel.cancelled() => break,
            r = replies.recv() => match r {
                Some(r) => Some(r),
                None => break,
            },
            _ = state.wake_writer.notified() => None,
        };
        // A second queued reply rides along when the message has room.
        if let Some(r) = reply.as_mut()
            && r.blocks.iter().map(|(_, d)| d.len()).sum::<usize>()
                < inner.config.target_message_size
            && let Ok(more) = replies.try_recv()
        {
            r.blocks.extend(more.blocks);
            r.presences.extend(more.presences);
        }
        let full = state.full.swap(false, Ordering::AcqRel);
        let wants: Vec<WantEntry> = lock(&state.wants_out).drain().map(|(_, e)| e).collect();
        let reply = reply.unwrap_or_default();
        if wants.is_empty() && !full && reply.blocks.is_empty() && reply.presences.is_empty() {
            continue;
        }
        let msg = Message {
            wantlist: wants,
            full,
            blocks: vec![],
            presences: reply.presences,
            pending_bytes: 0,
        };
        let block_bytes: usize = reply.blocks.iter().map(|(_, d)| d.len()).sum();
        let mut sent = false;
        for _attempt in 0..2 {
            if stream.is_none() {
                stream = open(&inner, &state).await;
            }
            let Some((s, version)) = stream.as_mut() else {
                break;
            };
            let body = msg.encode(*version, &reply.blocks);
            let mut head = Vec::with_capacity(10);
            put_varint(&mut head, body.len() as u64);
            let write = async {
                s.write_all(&head).await?;
                s.write_all(&body).await?;
                s.flush().await
            };
            let done = tokio::select! {
                biased;
                _ = state.cancel.cancelled() => return,
                done = write => done,
            };
            match done {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(peer = %state.peer, "bitswap write failed: {e}");
                    stream = None;
                }
            }
        }
        if sent {
            Ledger::add(&state.ledger.blocks_sent, reply.blocks.len() as u64);
            Ledger::add(&state.ledger.bytes_sent, block_bytes as u64);
        } else {
            tracing::debug!(peer = %state.peer, "bitswap message to an unreachable peer dropped");
        }
    }
    if let Some((mut s, _)) = stream {
        let _ = s.close().await;
    }
}

async fn open(inner: &Inner, state: &PeerState) -> Option<(Stream, Version)> {
    match tokio::time::timeout(OPEN_TIMEOUT, inner.open.open(state.peer)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(peer = %state.peer, "no bitswap stream: {e}");
            None
        }
        Err(_) => None,
    }
}
