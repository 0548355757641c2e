//! A member following the cluster's autolock setting with its own key
//! files (the re-key itself, crash-safe, is `crate::keys`), and rotating
//! the store's data key.

use std::sync::Arc;

use moat_api::ErrorKind;
use moat_lock::{KeySource, UnlockKey};
use moat_pki::Role;

use super::Member;
use crate::error::NodeError;
use crate::journal::{JournalAction, JournalActor, JournalEvent};
use crate::keys::{Autolock, KekFile, KeyPlan, clone_key, plan, rekey};

impl Member {
    /// Brings this node's key files in line with the cluster's autolock
    /// setting (see [`plan`]); returns what it did.
    pub(crate) async fn reconcile_keys(self: &Arc<Self>) -> Result<KeyPlan, NodeError> {
        let Some(role) = self.role() else {
            return Ok(KeyPlan::Keep);
        };
        let setting = match self.manager() {
            // Every agent round: read under the lock, not from a copy.
            Some(m) if role == Role::Manager => {
                Some(m.with_state(|s| Autolock::of(s).map_err(Into::into))?)
            }
            _ => None,
        };
        let file_generation = self.node_file().key_generation;
        let on_disk = self.layout.kek_file().exists();
        let held = self.keyring.hold();
        let current = held.kek();
        let plan = plan(role, setting.as_ref(), file_generation, on_disk, &current);
        let generation = setting.as_ref().map(|s| s.generation);
        let new_key = match (&plan, &setting) {
            (KeyPlan::Keep, _) => None,
            (KeyPlan::Lock | KeyPlan::Rotate, Some(Autolock { key: Some(k), .. })) => {
                Some(clone_key(k)?)
            }
            (KeyPlan::Unlock, _) => Some(
                UnlockKey::generate()
                    .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?,
            ),
            _ => None,
        };
        if let Some(new_key) = new_key {
            let kek_file = match plan {
                KeyPlan::Lock => KekFile::Remove,
                KeyPlan::Unlock => KekFile::Write,
                _ => KekFile::Keep,
            };
            if plan == KeyPlan::Lock {
                self.update_node_file(|f| f.dek_rotation_due = true)?;
            }
            rekey(
                &self.layout,
                &self.cluster,
                &self.id,
                &current,
                &new_key,
                kek_file,
            )?;
            held.replace(new_key);
            // Sealed files are done: the data-key rotation below takes the
            // lock itself.
            drop(held);
            let what = match (plan, role) {
                (KeyPlan::Lock, _) => JournalAction::AutolockEnabled,
                (KeyPlan::Rotate, _) => JournalAction::UnlockKeyRotated,
                (_, Role::Worker) => JournalAction::OwnKeyRestored,
                _ => JournalAction::AutolockDisabled,
            };
            tracing::info!(event = what.as_str(), "re-sealed this node's keys");
            self.journal(JournalEvent::new(JournalActor::ThisNode, what));
            if plan == KeyPlan::Lock {
                // Both were sealed under a key kept on disk until now.
                self.renew_soon();
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.rotate_dek().await {
                        tracing::error!(error = %e, "rotating the store's data key after autolock was turned on failed; it is retried at the next start");
                    }
                });
            }
        }
        // A worker follows no setting: should it be promoted again, the
        // setting of that day applies, however old.
        let generation = if role == Role::Worker {
            Some(0)
        } else {
            generation.filter(|g| *g > file_generation)
        };
        if let Some(g) = generation
            && g != file_generation
        {
            self.update_node_file(|f| f.key_generation = g)?;
        }
        Ok(plan)
    }

    /// Starts a data-key rotation in the background when the store's DEK
    /// has sealed [`moat_lock::DEK_ROTATE_AT`] records (3/4 of its limit)
    /// or its count was lost: long before sealing refuses at
    /// [`moat_lock::MAX_RECORDS_PER_DEK`], which would stop the log. The
    /// need is recorded in `node.json` first (`dek_rotation_due`), so a
    /// rotation that fails or is cut short by a stop is resumed at the
    /// next start. Called every agent round; cheap when nothing is due.
    /// Returns whether it started one.
    pub(crate) fn rotate_worn_dek(self: &Arc<Self>) -> Result<bool, NodeError> {
        if self.role() != Some(Role::Manager) || self.node_file().dek_rotation_due {
            return Ok(false);
        }
        let Some(m) = self.manager() else {
            return Ok(false);
        };
        // Busy (stopping, or a rotation holds the lock): next round.
        let Ok(inner) = m.inner.try_lock() else {
            return Ok(false);
        };
        let Some(cipher) = inner.as_ref().map(|r| r.cipher()) else {
            return Ok(false);
        };
        drop(inner);
        if !cipher.rotation_advised() {
            return Ok(false);
        }
        let (version, sealed) = cipher
            .records_sealed()
            .unwrap_or((moat_lock::DekVersion(0), 0));
        tracing::warn!(
            dek = version.0,
            records = sealed,
            limit = moat_lock::MAX_RECORDS_PER_DEK,
            "the store's data key has sealed 3/4 of its record limit (or its count was lost); rotating it"
        );
        self.update_node_file(|f| f.dek_rotation_due = true)?;
        let node = self.clone();
        tokio::spawn(async move {
            if let Err(e) = node.rotate_dek().await {
                tracing::error!(error = %e, "rotating the worn store data key failed; it is retried at the next start");
            }
        });
        Ok(true)
    }

    /// Rotates the store's data key (crash-safe; resumed at start).
    pub(crate) async fn rotate_dek(&self) -> Result<moat_lock::DekVersion, NodeError> {
        let m = self.require_manager()?;
        let inner = m.inner.lock().await;
        let Some(raft) = inner.as_ref() else {
            return Err(NodeError::new(
                ErrorKind::Unavailable,
                "this manager is stopping",
            ));
        };
        let version = raft
            .rotate_dek_with(
                |dir, identity, cipher| {
                    let held = self.keyring.hold();
                    let kek = held.kek();
                    moat_store::begin_dek_rotation(dir, identity, KeySource::Key(&kek), cipher)
                },
                &self.layout.store_dir(),
                |cipher| {
                    let _held = self.keyring.hold();
                    moat_store::complete_dek_rotation(&self.layout.store_dir(), cipher)
                },
            )
            .await
            .map_err(|e| {
                NodeError::new(ErrorKind::Internal, format!("rotating the data key: {e}"))
            })?;
        self.update_node_file(|f| f.dek_rotation_due = false)?;
        tracing::info!(version = version.0, "store data key rotated");
        self.journal(
            JournalEvent::new(JournalActor::ThisNode, JournalAction::DekRotated)
                .note(super::audit::dek_rotated_note(version)),
        );
        Ok(version)
    }
}
