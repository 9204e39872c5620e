//! [`ask_all`]: the one way this peer asks many peers something. Every
//! peer is asked at once and each answer is bounded by a timeout, so a
//! call takes as long as the slowest peer within that bound, whatever the
//! cluster's size; a peer that fails or stays silent comes back as an
//! error in its place, never as a hang.

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use libp2p::PeerId;

use super::ClusterError;
use crate::network::NetworkError;

/// Asks each of `peers` with `ask`, all at once, each bounded by `timeout`;
/// the answers come back in the order of `peers`.
pub async fn ask_all<T, F, Fut>(
    peers: impl IntoIterator<Item = PeerId>,
    timeout: Duration,
    ask: F,
) -> Vec<(PeerId, Result<T, ClusterError>)>
where
    F: Fn(PeerId) -> Fut,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let asks = peers.into_iter().map(|peer| {
        let answer = ask_one(peer, timeout, ask(peer));
        async move { (peer, answer.await) }
    });
    join_all(asks).await
}

/// `answer`, `peer`'s answer to a request, bounded by `timeout`.
pub async fn ask_one<T>(
    peer: PeerId,
    timeout: Duration,
    answer: impl Future<Output = Result<T, NetworkError>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, answer).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(ClusterError::PeerTimeout {
            peer,
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_peer_is_an_error_in_its_place() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let answers = ask_all([a, b, c], Duration::from_millis(50), |peer| async move {
            if peer == b {
                std::future::pending::<()>().await;
            }
            if peer == c {
                return Err(NetworkError::Closed);
            }
            Ok(peer)
        })
        .await;
        assert_eq!(answers.len(), 3);
        assert!(matches!(answers[0], (p, Ok(q)) if p == a && q == a));
        assert!(matches!(answers[1], (p, Err(ClusterError::PeerTimeout { .. })) if p == b));
        assert!(matches!(answers[2], (p, Err(ClusterError::Network(_))) if p == c));
    }
}
