//! The leader's proposer: client writes that wait together are committed
//! as one Raft entry (decision D47).
//!
//! openraft 0.9 appends each `client_write` as an entry of its own and
//! waits for that append's flush before it reads its next message (D44),
//! so with many writers the leader made one `fdatasync`, and followers one
//! round of replication, per write. A [`Proposer`] queues proposals; one
//! task takes the first and everything queued behind it and proposes them
//! as one [`Command::Batch`] (one command alone is proposed as itself),
//! then hands each caller its own response, or the batch's error — which
//! is the error the caller would have had alone, since the batch was one
//! `client_write`: not the leader (with the leader to forward to), or
//! Raft stopped. The model applies a batch's commands one by one, each as
//! it would alone (`ClusterState::apply`).
//!
//! It never waits to fill a batch: a batch is whatever queued while the
//! batches before it were being committed, so batches grow only with the
//! number of writers. A write that finds the proposer idle (nothing in
//! flight, nothing queued) is proposed at once from the caller's own task,
//! exactly as `client_write` alone: a lone writer's latency is what it was.
//!
//! Bounds: at most [`BatchLimits::queue`] proposals wait (a caller past
//! that waits to queue); a batch holds at most [`BatchLimits::commands`]
//! commands (never more than [`MAX_BATCH_COMMANDS`]) and
//! [`BatchLimits::bytes`] bytes of command JSON, far under the 16 MiB a
//! transport message may carry and the log's 64 MiB frame
//! ([`crate::MAX_FRAME_LEN`]) — a command larger than that goes alone, as
//! it did before; at most [`BatchLimits::in_flight`] batches are proposed
//! and not yet answered (a caller that stops waiting for a write it
//! proposed itself frees its slot early). A proposal whose caller stopped
//! waiting (a timeout) before its batch was formed is dropped, not
//! proposed.

use std::future::Future;
use std::sync::Arc;

use moat_pki::NodeId;
use openraft::BasicNode;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::raft::ClientWriteResponse;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::model::{Command, MAX_BATCH_COMMANDS, Response};
use crate::{Raft, TypeConfig};

/// What a write answers: the entry's log id (shared by every command of a
/// batch), and this command's own response in `data`.
pub type Written = ClientWriteResponse<TypeConfig>;

/// Why a write failed: exactly what `Raft::client_write` returns.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

/// How large batches may grow and how many may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most commands in one batch.
    pub commands: usize,
    /// Most bytes of command JSON in one batch (a command larger than this
    /// is proposed alone).
    pub bytes: usize,
    /// Most batches proposed and not yet committed and applied.
    pub in_flight: usize,
    /// Most proposals waiting to be batched.
    pub queue: usize,
}

impl Default for BatchLimits {
    /// 1,024 commands or 1 MiB, two batches in flight (one being appended
    /// while the one before it replicates and applies), 4,096 waiting.
    fn default() -> Self {
        Self {
            commands: 1024,
            bytes: 1 << 20,
            in_flight: 2,
            queue: 4096,
        }
    }
}

/// Proposes commands through the Raft handle it was made with, batching
/// those that wait together. Cheap to clone; its task stops when the last
/// clone is dropped (after answering what it proposed).
#[derive(Clone)]
pub struct Proposer {
    raft: Raft,
    queue: mpsc::Sender<Proposal>,
    /// One permit per batch that may be in flight.
    slots: Arc<Semaphore>,
    in_flight: usize,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposer")
            .field(
                "waiting",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

impl Proposer {
    /// A proposer with the default [`BatchLimits`], its task spawned on
    /// the current tokio runtime (panics outside one, as `tokio::spawn`).
    pub fn new(raft: Raft) -> Self {
        Self::with_limits(raft, BatchLimits::default())
    }

    /// A proposer with `limits` (each at least 1; at most
    /// [`MAX_BATCH_COMMANDS`] commands, which a batch may hold).
    pub fn with_limits(raft: Raft, limits: BatchLimits) -> Self {
        let limits = BatchLimits {
            commands: limits.commands.clamp(1, MAX_BATCH_COMMANDS),
            bytes: limits.bytes.max(1),
            in_flight: limits.in_flight.max(1),
            queue: limits.queue.max(1),
        };
        let (queue, proposals) = mpsc::channel(limits.queue);
        let slots = Arc::new(Semaphore::new(limits.in_flight));
        tokio::spawn(run(raft.clone(), proposals, slots.clone(), limits));
        Self {
            raft,
            queue,
            slots,
            in_flight: limits.in_flight,
        }
    }

    /// Commits `command` (with others waiting at the same time, in one
    /// entry) and answers once it is applied on this manager, with its own
    /// response; fails as `Raft::client_write` of the command alone would.
    ///
    /// A `Command::Batch` is proposed alone, as it is.
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        // Idle (nothing in flight, nothing waiting): proposed at once from
        // the caller's task, as `client_write` alone, so that a lone
        // writer pays no hand-off to the proposer's task and back.
        if self.slots.available_permits() == self.in_flight
            && self.queue.capacity() == self.queue.max_capacity()
            && let Ok(_slot) = self.slots.clone().try_acquire_owned()
        {
            return self.raft.client_write(command).await;
        }
        let size = match command {
            Command::Batch(_) => usize::MAX,
            ref c => json_len(c),
        };
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal {
            command,
            size,
            reply,
        };
        if self.queue.send(proposal).await.is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        answer
            .await
            .unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

/// One caller's command and where its answer goes.
struct Proposal {
    command: Command,
    /// Bytes of its JSON (`usize::MAX`: never batched with others).
    size: usize,
    reply: oneshot::Sender<Result<Written, WriteError>>,
}

/// The proposer's task: forms batches in queue order, one per free slot
/// (at most `limits.in_flight` in flight), and proposes them in that
/// order. The batch is formed once a slot is free, so it takes everything
/// that queued while the slots were busy.
async fn run(
    raft: Raft,
    mut queue: mpsc::Receiver<Proposal>,
    slots: Arc<Semaphore>,
    limits: BatchLimits,
) {
    let mut next: Option<Proposal> = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < limits.commands {
            let Ok(p) = queue.try_recv() else { break };
            if bytes.saturating_add(p.size) > limits.bytes {
                next = Some(p);
                break;
            }
            bytes += p.size;
            batch.push(p);
        }
        // A caller that gave up waiting (its timeout) is not proposed for.
        batch.retain(|p| !p.reply.is_closed());
        let (mut commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let command = match commands.len() {
            0 => continue,
            1 => commands.swap_remove(0),
            _ => Command::Batch(commands),
        };
        // Sent to Raft's core here, in queue order; answered apart.
        match raft.client_write_ff(command).await {
            Ok(pending) => {
                tokio::spawn(answer(raft.clone(), pending, replies, slot));
            }
            Err(fatal) => {
                for reply in replies {
                    let _ = reply.send(Err(RaftError::Fatal(fatal.clone())));
                }
            }
        }
    }
}

/// Waits for a proposed entry and answers its callers, each with its own
/// response. `_slot` frees a place for the next batch when this ends.
async fn answer<E>(
    raft: Raft,
    pending: impl Future<Output = Result<Result<Written, ClientWriteError<NodeId, BasicNode>>, E>>,
    replies: Vec<oneshot::Sender<Result<Written, WriteError>>>,
    _slot: OwnedSemaphorePermit,
) {
    let written = match pending.await {
        Ok(result) => result.map_err(RaftError::APIError),
        // Raft's core stopped before answering: the reason it stopped, as
        // `client_write` reports it.
        Err(_) => Err(RaftError::Fatal(match raft.is_initialized().await {
            Err(fatal) => fatal,
            Ok(_) => Fatal::Stopped,
        })),
    };
    let callers = replies.len();
    for (reply, result) in replies.into_iter().zip(split(written, callers)) {
        let _ = reply.send(result);
    }
}

/// One result per caller of an entry: the entry's own if it held one
/// command, otherwise each command's response of the batch.
fn split(written: Result<Written, WriteError>, callers: usize) -> Vec<Result<Written, WriteError>> {
    let mut answers = Vec::with_capacity(callers);
    match written {
        Err(e) => {
            for _ in 0..callers {
                answers.push(Err(e.clone()));
            }
        }
        Ok(w) if callers == 1 => answers.push(Ok(w)),
        Ok(w) => match w.data {
            Response::Batch(responses) if responses.len() == callers => {
                for data in responses {
                    answers.push(Ok(Written {
                        log_id: w.log_id,
                        data,
                        membership: None,
                    }));
                }
            }
            other => {
                // `apply` answers a batch with one response per command.
                tracing::error!(
                    log_id = %w.log_id,
                    callers,
                    response = ?other,
                    "a batch's response does not match its commands"
                );
                for _ in 0..callers {
                    answers.push(Err(RaftError::Fatal(Fatal::Panicked)));
                }
            }
        },
    }
    answers
}

/// Bytes of `command`'s JSON, counted without keeping them.
fn json_len(command: &Command) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, command) {
        Ok(()) => count.0,
        // Not encodable: alone, where the log reports why.
        Err(_) => usize::MAX,
    }
}
