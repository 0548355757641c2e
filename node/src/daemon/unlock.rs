//! `moat unlock` on a locked manager: the whole key or one share of it
//! goes through the node's [`UnlockGate`] (moat-lock: throttling and the
//! shares given so far); this file only parses the input, asks the gate,
//! journals what happened and brings the node up.
//!
//! The key is tried by opening the node's sealed TLS files with it, once:
//! what that opens is what the node starts with. Input that does not parse
//! is refused before the gate (and is not a failed guess: no key was
//! tried); only a well-formed key that does not open the node counts.

use moat_api::{ErrorKind, UnlockRequest, UnlockResponse};
use moat_lock::{Attempt, Refusal, UnlockInput, UnlockKey, UnlockShare};

use super::{Daemon, Phase};
use crate::error::NodeError;
use crate::journal::{JournalAction, JournalActor, JournalEvent};

const UNLOCK_HINT: &str = "give the unlock key that was current when this manager last ran: the one printed when autolock was turned on or the key last rotated (`moat unlock-key` on an unlocked manager shows the current one; a manager that was down during a rotation, or while autolock was turned off, needs the key from before)";

impl Daemon {
    /// `moat unlock`: the whole key, or one share of it.
    pub(crate) async fn unlock(&self, req: UnlockRequest) -> Result<UnlockResponse, NodeError> {
        let _guard = self.lifecycle.lock().await;
        let input = self.parse_unlock(req).await?;
        self.try_unlock(input, JournalActor::LocalOperator).await
    }

    /// Tries `key` (given at start) on a locked node.
    pub(super) async fn unlock_with(
        &self,
        key: UnlockKey,
        actor: JournalActor,
    ) -> Result<(), NodeError> {
        self.try_unlock(UnlockInput::Key(key), actor)
            .await
            .map(|_| ())
    }

    /// The key or share in `req`; text that does not parse is refused
    /// (and journaled) without reaching the gate.
    async fn parse_unlock(&self, req: UnlockRequest) -> Result<UnlockInput, NodeError> {
        let file = self.locked().await.ok_or_else(not_locked)?;
        let node = file.node_id.to_string();
        let (key, share) = (req.key, req.share);
        let parsed = match (key, share) {
            (Some(text), None) => text
                .expose_secret()
                .trim()
                .parse::<UnlockKey>()
                .map(UnlockInput::Key)
                .map_err(|e| {
                    (
                        JournalAction::Unlock,
                        "malformed unlock key",
                        NodeError::new(
                            ErrorKind::PermissionDenied,
                            format!("invalid unlock key: {e}"),
                        )
                        .hint(UNLOCK_HINT),
                    )
                }),
            (None, Some(text)) => text
                .expose_secret()
                .trim()
                .parse::<UnlockShare>()
                .map(UnlockInput::Share)
                .map_err(|e| {
                    (
                        JournalAction::UnlockShare,
                        "malformed share",
                        NodeError::new(ErrorKind::InvalidArgument, format!("invalid share: {e}"))
                            .hint("copy the share exactly as `moat unlock-key --split` printed it"),
                    )
                }),
            _ => {
                return Err(NodeError::new(
                    ErrorKind::InvalidArgument,
                    "give either the unlock key or one share of it",
                ));
            }
        };
        parsed.map_err(|(action, reason, e)| {
            self.journal.record_or_log(
                &node,
                JournalEvent::new(JournalActor::LocalOperator, action).denied(reason),
            );
            e
        })
    }

    /// Puts `input` through the gate; on success the node comes up.
    async fn try_unlock(
        &self,
        input: UnlockInput,
        actor: JournalActor,
    ) -> Result<UnlockResponse, NodeError> {
        let now = self.clock.instant();
        // What a throttled attempt is journaled as.
        let attempted = match input {
            UnlockInput::Key(_) => JournalAction::Unlock,
            UnlockInput::Share(_) => JournalAction::UnlockShare,
        };
        let (attempt, file) = {
            let mut phase = self.phase.write().await;
            let Phase::Locked(locked) = &mut *phase else {
                return Err(not_locked());
            };
            let file = locked.file.clone();
            let layout = &self.layout;
            let attempt = locked.gate.attempt(input, now, |key| {
                crate::files::open_tls(layout, &key, &file.cluster_id, &file.node_id)
                    .map(|opened| opened.map(|tls| (key, tls)))
            });
            (attempt, file)
        };
        let node = file.node_id.to_string();
        let event = |action| JournalEvent::new(actor.clone(), action);
        let record = |event: JournalEvent| self.journal.record_or_log(&node, event);
        match attempt {
            Attempt::Unlocked((key, tls)) => {
                if let Err(e) = self.bring_up(file, key, tls).await {
                    record(event(JournalAction::Unlock).failed(e.message()));
                    return Err(e);
                }
                record(event(JournalAction::Unlock));
                tracing::info!(node = %node, "unlocked");
                Ok(UnlockResponse {
                    unlocked: true,
                    shares_have: 0,
                    shares_need: 0,
                    shares_total: 0,
                    note: None,
                })
            }
            Attempt::NeedMore {
                progress,
                set_aside,
            } => {
                let note = set_aside.map(|aside| {
                    let message = format!(
                        "this share belongs to another split ({}) than the {} share(s) given before; those were set aside and collecting started over with this one",
                        aside.found, aside.dropped
                    );
                    record(event(JournalAction::UnlockShare).denied(message.clone()));
                    message
                });
                record(event(JournalAction::UnlockShare).note(format!(
                    "share accepted: {} of {} needed",
                    progress.have(),
                    progress.need()
                )));
                Ok(UnlockResponse {
                    unlocked: false,
                    shares_have: progress.have(),
                    shares_need: progress.need(),
                    shares_total: progress.total(),
                    note,
                })
            }
            Attempt::Refused(Refusal::Throttled(t)) => {
                record(event(attempted).denied("throttled after repeated failures"));
                let secs = t.retry_after.as_secs_f64().ceil() as u64;
                Err(NodeError::new(
                    ErrorKind::Unavailable,
                    format!(
                        "too many failed unlock attempts ({} in a row): try again in {secs} s",
                        t.failures
                    ),
                )
                .hint(
                    "each further failure doubles the wait, up to 5 minutes; a success resets it",
                ))
            }
            Attempt::Refused(Refusal::WrongKey { .. }) => {
                self.failed_unlocks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                record(event(JournalAction::Unlock).denied("invalid unlock key"));
                Err(
                    NodeError::new(ErrorKind::PermissionDenied, "invalid unlock key")
                        .hint(UNLOCK_HINT),
                )
            }
            Attempt::Refused(Refusal::ShareRefused(e)) => {
                let message = e.to_string();
                record(event(JournalAction::UnlockShare).denied(message.clone()));
                Err(NodeError::new(ErrorKind::InvalidArgument, message)
                    .hint("give a share of the current split that was not given yet"))
            }
            Attempt::Refused(Refusal::SharesDidNotCombine(e)) => {
                Err(NodeError::new(ErrorKind::InvalidArgument, e.to_string()))
            }
            Attempt::Refused(Refusal::CheckFailed(e)) => {
                record(event(JournalAction::Unlock).failed(e.message()));
                Err(e)
            }
        }
    }
}

fn not_locked() -> NodeError {
    NodeError::new(ErrorKind::FailedPrecondition, "This node is not locked.")
}
