//! `moat service logs`: the leader relays requests for a task's output to
//! the node that runs it, over that node's own mutual-TLS session. Nodes
//! serve nothing (every connection is from a node to a manager), so a
//! request rides on the answer to the node's pending `task_sync` long
//! poll, and the node sends the output back with `task_logs`. The relay
//! lives in the leader's memory only: a request that is not answered
//! within [`WAIT`] fails, naming the node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

/// Longest a request waits for its node.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// Most output relayed per task (the end of it): larger asks are cut.
pub(crate) const MAX_LOG_BYTES: u64 = 1 << 20;
/// Most requests waiting at once (per leader).
const MAX_WAITING: usize = 4096;

/// A request for one task's output, as its node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogRequest {
    /// The relay's id for it.
    pub(crate) id: u64,
    /// The task.
    pub(crate) task_id: String,
    /// The last bytes only (at most [`MAX_LOG_BYTES`]).
    pub(crate) tail_bytes: u64,
}

type Answer = Result<String, String>;

#[derive(Default)]
struct Relay {
    next: u64,
    /// Requests not yet handed to their node, by node id.
    queued: HashMap<String, Vec<LogRequest>>,
    /// Requests handed out or queued, by id: the node that must answer.
    waiting: HashMap<u64, (String, oneshot::Sender<Answer>)>,
}

/// The leader's relay.
#[derive(Default)]
pub(crate) struct LogRelay {
    inner: Mutex<Relay>,
    /// Wakes the long polls when requests are queued.
    queued: Notify,
}

impl LogRelay {
    /// Asks `node` for the output of `task_id`; the answer (or its error)
    /// comes on the receiver.
    pub(crate) fn request(
        &self,
        node: &str,
        task_id: &str,
        tail_bytes: Option<u64>,
    ) -> Result<oneshot::Receiver<Answer>, String> {
        let (tx, rx) = oneshot::channel();
        {
            let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            // Requests whose caller gave up are dropped first.
            r.waiting.retain(|_, (_, tx)| !tx.is_closed());
            if r.waiting.len() >= MAX_WAITING {
                return Err(format!(
                    "{MAX_WAITING} log requests are already waiting on this leader; try again shortly"
                ));
            }
            r.next += 1;
            let id = r.next;
            let request = LogRequest {
                id,
                task_id: task_id.to_owned(),
                tail_bytes: tail_bytes.unwrap_or(MAX_LOG_BYTES).min(MAX_LOG_BYTES),
            };
            r.queued.entry(node.to_owned()).or_default().push(request);
            r.waiting.insert(id, (node.to_owned(), tx));
        }
        self.queued.notify_waiters();
        Ok(rx)
    }

    /// The requests queued for `node`, handed out once.
    pub(crate) fn take_for(&self, node: &str) -> Vec<LogRequest> {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.queued.remove(node).unwrap_or_default()
    }

    /// Resolves when requests are queued (for any node) after it was
    /// made (or [`enable`](tokio::sync::futures::Notified::enable)d).
    pub(crate) fn queued(&self) -> tokio::sync::futures::Notified<'_> {
        self.queued.notified()
    }

    /// `node`'s answer to request `id`; ignored unless the request was
    /// made of that node (a node answers only for itself).
    pub(crate) fn answer(&self, node: &str, id: u64, answer: Answer) -> bool {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match r.waiting.get(&id) {
            Some((asked, _)) if asked == node => {}
            _ => return false,
        }
        match r.waiting.remove(&id) {
            Some((_, tx)) => tx.send(answer).is_ok(),
            None => false,
        }
    }
}

/// `output` cut to its last `max` bytes, on a character boundary, as text.
pub(crate) fn tail_text(output: &[u8], max: u64) -> String {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let start = output.len().saturating_sub(max);
    String::from_utf8_lossy(&output[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_answered_only_by_its_node() {
        let relay = LogRelay::default();
        let rx = relay.request("n1", "t1", Some(100)).unwrap();
        assert!(relay.take_for("n2").is_empty());
        let handed = relay.take_for("n1");
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].tail_bytes, 100);
        assert!(relay.take_for("n1").is_empty(), "handed out once");
        // Another node cannot answer for n1.
        assert!(!relay.answer("n2", handed[0].id, Ok("forged".into())));
        assert!(relay.answer("n1", handed[0].id, Ok("hello".into())));
        assert_eq!(rx.await.unwrap(), Ok("hello".into()));
        // A tail larger than the cap is cut to it.
        let _rx = relay.request("n1", "t2", Some(u64::MAX)).unwrap();
        assert_eq!(relay.take_for("n1")[0].tail_bytes, MAX_LOG_BYTES);
    }

    #[test]
    fn the_tail_is_cut_on_bytes_and_shown_as_text() {
        assert_eq!(tail_text(b"hello world", 5), "world");
        assert_eq!(tail_text(b"hi", 5), "hi");
        assert_eq!(tail_text(&[0xff, b'a'], 5), "\u{fffd}a");
    }
}
