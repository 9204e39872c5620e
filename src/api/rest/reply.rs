//! Responses as the reference's `SendResponse` and `StreamResponse` make
//! them: JSON plus a newline, `{"code","message"}` errors, NDJSON streams
//! that answer 204 when empty, 500 when the first item already failed, and
//! report a later failure in the `X-Stream-Error` trailer.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use warp::Reply;
use warp::http::{StatusCode, header};
use warp::reject::{MethodNotAllowed, Rejection};

use super::server::StreamErrors;
use crate::cluster::ClusterError;
use crate::types::ApiError;

/// Every handler answers with a finished response.
pub type ApiReply = warp::reply::Response;

/// `body` as JSON and a newline.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> ApiReply {
    match serde_json::to_vec(body) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            with_json_type(status, bytes)
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        ),
    }
}

/// The reference's error body.
pub fn error(status: StatusCode, message: String) -> ApiReply {
    let body = ApiError {
        code: status.as_u16(),
        message,
    };
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    with_json_type(status, bytes)
}

/// The answer of a [`Cluster`](crate::cluster::Cluster) call: the value
/// as JSON, or its error.
pub fn answer<T: Serialize>(result: Result<T, ClusterError>) -> ApiReply {
    match result {
        Ok(value) => json(StatusCode::OK, &value),
        Err(e) => failed(&e),
    }
}

/// A [`ClusterError`] as the reference sends it: 404 for what does not
/// exist (its `state.ErrNotFound`, or an IPFS path the daemon cannot
/// resolve), 403 when the other peers refuse this one, and 500 for every
/// other failure, invalid replication factors included, as its
/// `SendResponse` does.
pub fn failed(e: &ClusterError) -> ApiReply {
    let status = if e.is_not_found() {
        StatusCode::NOT_FOUND
    } else if matches!(e, ClusterError::NotTrusted) {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    error(status, e.to_string())
}

/// Items a [`Cluster`](crate::cluster::Cluster) streams, as NDJSON.
pub async fn stream<T>(items: tokio::sync::mpsc::Receiver<T>) -> ApiReply
where
    T: Serialize + Send + Sync + 'static,
{
    ndjson(tokio_stream::wrappers::ReceiverStream::new(items).map(Ok)).await
}

/// 204 with no body: the reference's `SendResponse` sets the JSON content
/// type before it knows there is nothing to send, so it goes out anyway.
pub fn no_content() -> ApiReply {
    with_json_type(StatusCode::NO_CONTENT, Vec::new())
}

fn with_json_type(status: StatusCode, bytes: Vec<u8>) -> ApiReply {
    let mut res = warp::reply::Response::new(bytes.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

/// Newline-delimited JSON, one item per line, flushed as produced: 204
/// when there is no item, 500 when the first item already failed, else 200
/// and the items.
pub async fn ndjson<T, S>(items: S) -> ApiReply
where
    T: Serialize + Send + Sync + 'static,
    S: Stream<Item = Result<T, String>> + Send + Sync + Unpin + 'static,
{
    ndjson_lines(items.map(|item| {
        item.and_then(|v| {
            let mut line = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
            line.push(b'\n');
            Ok(Bytes::from(line))
        })
    }))
    .await
}

/// Items already encoded: each `Ok` holds one or more whole lines. Small
/// items ready at the same time go out in one chunk (the client sees them
/// at once, and a million pins are not a million chunks); an item of
/// `BIG_ITEM` bytes or more is a chunk of its own.
pub async fn ndjson_lines<S>(lines: S) -> ApiReply
where
    S: Stream<Item = Result<Bytes, String>> + Send + Sync + Unpin + 'static,
{
    let mut lines = lines.peekable();
    match std::pin::Pin::new(&mut lines).peek().await {
        // The reference also announces its trailer here, but a 204 has no
        // body to carry one, and hyper drops the header.
        None => return no_content(),
        Some(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.clone()),
        Some(Ok(_)) => {}
    }
    // An error ends the stream and is handed to the HTTP layer, which sends
    // it as the `X-Stream-Error` trailer (see `server`).
    let errors = StreamErrors::default();
    let seen = errors.clone();
    let chunks = lines
        .ready_chunks(READY_LINES)
        .scan(false, move |ended, batch| {
            if *ended {
                return futures::future::ready(None);
            }
            let mut chunks = Vec::new();
            let mut small = Vec::new();
            for line in batch {
                match line {
                    // Items that are already big batches of lines (a listing
                    // of the pinset) go out as they are: gathering them
                    // copied every byte of a listing once more.
                    Ok(bytes) if bytes.len() >= BIG_ITEM => {
                        if !small.is_empty() {
                            chunks.push(Bytes::from(std::mem::take(&mut small)));
                        }
                        chunks.push(bytes);
                    }
                    Ok(bytes) => small.extend_from_slice(&bytes),
                    Err(e) => {
                        seen.push(e);
                        *ended = true;
                        break;
                    }
                }
            }
            if !small.is_empty() {
                chunks.push(Bytes::from(small));
            }
            futures::future::ready(Some(futures::stream::iter(chunks)))
        })
        .flatten()
        .map(Ok::<_, std::convert::Infallible>);
    let mut res = warp::reply::stream(chunks).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert(
        header::TRAILER,
        header::HeaderValue::from_static("X-Stream-Error"),
    );
    res.extensions_mut().insert(errors);
    res
}

/// The most items already produced that one chunk gathers.
const READY_LINES: usize = 256;
/// Items of at least this many bytes are a chunk of their own.
const BIG_ITEM: usize = 16 * 1024;

/// Buffers for the chunks of one streamed body, each given back once the
/// HTTP layer has written and dropped its chunk. A listing of a million
/// pins is a thousand chunks of about 400 KB, and the peer's allocator
/// hands freed memory back to the system at once (`MIMALLOC_PURGE_DELAY=0`,
/// see `main.rs`): a fresh buffer per chunk cost a page fault per 4 KiB
/// written and an `madvise` per chunk freed, 14 % of the listing's CPU.
/// Clones share the buffers; they are freed with the last clone and the
/// last chunk.
#[derive(Debug, Clone, Default)]
pub struct ChunkBuffers(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers kept for reuse: enough for the chunks in flight between the
/// encoders and the socket (see `get_allocations`), so that the memory a
/// listing holds stays a few chunks.
const KEPT_BUFFERS: usize = 8;

impl ChunkBuffers {
    /// An empty buffer of at least `capacity` bytes, reused if one is back.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buffer = self.kept().pop().unwrap_or_default();
        buffer.reserve(capacity);
        buffer
    }

    /// `buffer` as a chunk that gives it back here when dropped.
    pub fn chunk(&self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buffer,
            home: self.clone(),
        })
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A buffer lent out as a chunk by [`ChunkBuffers::chunk`].
struct Lent {
    buffer: Vec<u8>,
    home: ChunkBuffers,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut kept = self.home.kept();
        if kept.len() < KEPT_BUFFERS {
            let mut buffer = std::mem::take(&mut self.buffer);
            buffer.clear();
            kept.push(buffer);
        }
    }
}

/// Unknown paths: 404 with the JSON error; known paths with another method:
/// 405 with an empty body, as gorilla/mux answers.
pub async fn rejection(rejection: Rejection) -> Result<ApiReply, std::convert::Infallible> {
    if rejection.find::<MethodNotAllowed>().is_some() {
        let mut res = warp::reply::Response::new(Vec::new().into());
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(res);
    }
    Ok(error(StatusCode::NOT_FOUND, "not found".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_errors_get_the_reference_status_codes() {
        let code = |e: ClusterError| failed(&e).status();
        assert_eq!(code(ClusterError::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(code(ClusterError::NotTrusted), StatusCode::FORBIDDEN);
        // The reference answers every other failed call 500, invalid
        // replication factors and follower mode included.
        for e in [
            ClusterError::InvalidReplication("cluster.replication_factor_min is larger than max"),
            ClusterError::Follower,
            ClusterError::QueueFull(1),
            ClusterError::RemoveSelf,
        ] {
            assert_eq!(code(e), StatusCode::INTERNAL_SERVER_ERROR);
        }
    }

    /// A written chunk's buffer serves the next chunk (no fresh pages per
    /// chunk), its bytes are the chunk's until then, and no more than
    /// `KEPT_BUFFERS` wait for reuse.
    #[test]
    fn chunk_buffers_come_back_once_written_and_stay_few() {
        let buffers = ChunkBuffers::default();
        let mut first = buffers.take(1000);
        first.extend_from_slice(b"line\n");
        let at = first.as_ptr();
        let chunk = buffers.chunk(first);
        let other = buffers.take(1000);
        assert_ne!(other.as_ptr(), at, "lent out while the chunk lives");
        assert_eq!(&chunk[..], b"line\n");
        drop(chunk);
        let again = buffers.take(1000);
        assert_eq!(again.as_ptr(), at, "the written chunk's buffer again");
        assert!(again.is_empty() && again.capacity() >= 1000);

        let chunks: Vec<Bytes> = (0..2 * KEPT_BUFFERS)
            .map(|_| buffers.chunk(buffers.take(10)))
            .collect();
        drop(chunks);
        assert_eq!(buffers.kept().len(), KEPT_BUFFERS);
    }
}
