//! Secrets and configs: named, versioned files that services ask for and
//! that a task's node receives only while the task is assigned to it.
//!
//! Both kinds live in the replicated [`State`](crate::State) (so in the
//! store, encrypted at rest like every other record) and share one shape;
//! they differ in who may see the data (a config's data is shown by
//! `config inspect`, a secret's never) and where a task finds them.
//!
//! A service refers to a secret by a [`SecretRef`]: the secret's id and one
//! version, resolved when the spec is written. An unpinned reference
//! (`--secret NAME`) follows the secret: `secret update` moves it to the
//! new version, which changes the task spec and so starts a rolling update
//! with the service's update policy. A pinned one (`--secret NAME@3`) stays.
//! A version that is neither the latest nor used by a service's spec or by
//! a task that has not ended is dropped.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::model::{ServiceSpec, TaskSpec, TaskState};
use crate::state::{MAX_SERVICE_ID_LEN, State};

/// A secret's or config's id: 26 base32 characters, chosen by the
/// proposer.
pub type SecretId = String;

/// The largest secret or config (Docker's limit for secrets: 500 KiB).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;
/// The longest secret or config name (Docker's limit).
pub const MAX_SECRET_NAME_LEN: usize = 64;
/// The most secrets and configs one service may use, together.
pub const MAX_SECRET_REFS: usize = 64;
/// The most secrets and configs a cluster holds, together.
pub const MAX_SECRETS: usize = 10_000;
/// The most bytes all secrets and configs hold together, every version
/// counted: the store (and every snapshot) carries them all.
pub const MAX_TOTAL_SECRET_BYTES: usize = 64 * 1024 * 1024;
/// The most versions one secret keeps (older ones still in use block
/// `secret update` beyond this).
pub const MAX_SECRET_VERSIONS: usize = 16;
/// The longest target file name (bytes).
pub const MAX_TARGET_LEN: usize = 255;
/// The mode a secret's or config's file gets unless the service says.
pub const DEFAULT_SECRET_MODE: u32 = 0o400;

/// Which of the two a stored file is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// Never shown; on a node only in memory and on a tmpfs.
    #[default]
    Secret,
    /// Not secret: `config inspect` shows it.
    Config,
}

impl SecretKind {
    /// The word in commands and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Secret => "secret",
            SecretKind::Config => "config",
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret's bytes: zeroized when dropped, never printed (`Debug` shows
/// the length), base64 in the store's JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretData(Zeroizing<Vec<u8>>);

impl SecretData {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes. Never log or print them.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretData({} bytes)", self.0.len())
    }
}

impl Serialize for SecretData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(data_encoding::BASE64.encode(&self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        // Bound before decoding: base64 of the largest secret.
        if text.len() > MAX_SECRET_BYTES.div_ceil(3) * 4 {
            return Err(serde::de::Error::custom(format!(
                "secret data of {} base64 characters is over the {MAX_SECRET_BYTES}-byte limit",
                text.len()
            )));
        }
        data_encoding::BASE64
            .decode(text.as_bytes())
            .map(SecretData::new)
            .map_err(|e| serde::de::Error::custom(format!("secret data is not base64: {e}")))
    }
}

/// One version of a secret or config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    /// 1 for the first, one more for each `update`.
    pub version: u64,
    /// The bytes.
    pub data: SecretData,
    /// The keyed digest of the bytes (`hmac-sha256:…` under the cluster's
    /// audit key, as `moat audit hash` computes it): names the version
    /// without revealing it.
    pub digest: String,
    /// When it was made (Unix milliseconds).
    pub created_at: i64,
}

/// A secret or config as the cluster stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Its id.
    pub id: SecretId,
    /// Which kind.
    pub kind: SecretKind,
    /// Unique among its kind.
    pub name: String,
    /// Operator labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was created (Unix milliseconds).
    pub created_at: i64,
    /// When its last version was made (Unix milliseconds).
    pub updated_at: i64,
    /// Its versions, oldest first; the last is the latest. Never empty.
    pub versions: Vec<SecretVersion>,
}

impl Secret {
    /// The latest version.
    pub fn latest(&self) -> Option<&SecretVersion> {
        self.versions.last()
    }

    /// Version `v`, if still kept.
    pub fn version(&self, v: u64) -> Option<&SecretVersion> {
        self.versions.iter().find(|x| x.version == v)
    }
}

/// A service's use of a secret or config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// Which kind.
    pub kind: SecretKind,
    /// The secret's id.
    pub secret_id: SecretId,
    /// Its name when the reference was made (for outputs).
    pub name: String,
    /// The version the tasks get.
    pub version: u64,
    /// `NAME@VERSION`: stays on `version` when the secret is updated.
    #[serde(default)]
    pub pinned: bool,
    /// The file name the task sees (a secret: in its secrets directory;
    /// a config: in its configs directory, or where the container has it).
    pub target: String,
    /// The file's mode (`0400` unless given).
    pub mode: u32,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)?;
        if self.target != self.name {
            write!(f, " as {}", self.target)?;
        }
        Ok(())
    }
}

/// Whether `name` is a valid secret or config name, Docker's rule: 1 to 64
/// characters, letters and digits, with `-`, `_` and `.` inside.
pub fn validate_secret_name(kind: SecretKind, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a {kind} needs a name"));
    }
    if name.len() > MAX_SECRET_NAME_LEN {
        return Err(format!(
            "{kind} name {:?}… is {} characters long; at most {MAX_SECRET_NAME_LEN} are allowed",
            name.chars().take(20).collect::<String>(),
            name.len()
        ));
    }
    let bytes = name.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    let inner_ok = bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !inner_ok || !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
        return Err(format!(
            "invalid {kind} name {name:?}: use letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Whether `target` may name a task's file: one path component, not `.`
/// or `..`, no NUL, at most 255 bytes. `identity` is kept for the task's
/// own certificate.
pub fn validate_target(kind: SecretKind, target: &str) -> Result<(), String> {
    if target.is_empty() || target == "." || target == ".." {
        return Err(format!("{kind} target {target:?} is not a file name"));
    }
    if target.len() > MAX_TARGET_LEN {
        return Err(format!(
            "{kind} target is {} bytes long; at most {MAX_TARGET_LEN} are allowed",
            target.len()
        ));
    }
    if target.contains('/') || target.contains('\0') {
        return Err(format!(
            "{kind} target {target:?} must be a file name, without '/' or NUL"
        ));
    }
    if kind == SecretKind::Secret && (target == "identity" || target.starts_with(".identity")) {
        return Err(format!(
            "secret target {target:?} is kept for the task's own certificate (\"identity\" and names starting \".identity\")"
        ));
    }
    Ok(())
}

/// Checks a service's references on their own (the store checks that the
/// secrets and versions exist): at most [`MAX_SECRET_REFS`], valid targets,
/// no target twice within a kind, modes within `0o777`.
pub fn validate_refs(refs: &[SecretRef]) -> Result<(), String> {
    if refs.len() > MAX_SECRET_REFS {
        return Err(format!(
            "{} secrets and configs; at most {MAX_SECRET_REFS} are allowed",
            refs.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in refs {
        validate_secret_name(r.kind, &r.name)?;
        validate_target(r.kind, &r.target)?;
        if r.mode > 0o777 {
            return Err(format!(
                "{} {}: mode {:o} is not a file mode (at most 0777)",
                r.kind, r.name, r.mode
            ));
        }
        if !seen.insert((r.kind, r.target.as_str())) {
            return Err(format!(
                "two {}s have the target {:?}: give one another target",
                r.kind, r.target
            ));
        }
    }
    Ok(())
}

impl State {
    /// The secret (`kind`) that `id_or_name` names: an exact id, an exact
    /// name, or a prefix of exactly one id of that kind.
    pub fn secret(&self, kind: SecretKind, id_or_name: &str) -> Option<&Secret> {
        if id_or_name.is_empty() {
            return None;
        }
        if let Some(s) = self.secrets.get(id_or_name).filter(|s| s.kind == kind) {
            return Some(s);
        }
        if let Some(s) = self
            .secrets
            .values()
            .find(|s| s.kind == kind && s.name == id_or_name)
        {
            return Some(s);
        }
        let mut matches = self
            .secrets
            .values()
            .filter(|s| s.kind == kind && s.id.starts_with(id_or_name));
        let first = matches.next()?;
        matches.next().is_none().then_some(first)
    }

    /// The names of the services whose spec uses secret `id`.
    pub fn secret_users(&self, id: &str) -> Vec<&str> {
        self.services
            .values()
            .filter(|s| s.spec.task.secrets.iter().any(|r| r.secret_id == id))
            .map(|s| s.spec.name.as_str())
            .collect()
    }

    /// The services that follow secret `id` (an unpinned reference): a
    /// new version rolls them.
    pub fn secret_followers<'a>(
        &'a self,
        id: &'a str,
    ) -> impl Iterator<Item = &'a crate::Service> + 'a {
        self.services.values().filter(move |s| {
            s.spec
                .task
                .secrets
                .iter()
                .any(|r| r.secret_id == id && !r.pinned)
        })
    }

    /// What the node `node` may receive for task `task_id`: each of the
    /// task's references with its version's data. Only while the task is
    /// assigned to that node, is to run, and has not ended; otherwise the
    /// reason it is refused.
    pub fn task_files(
        &self,
        task_id: &str,
        node: &str,
    ) -> Result<Vec<(&SecretRef, &SecretVersion)>, String> {
        let task = self.task_to_run(task_id, node)?;
        task.spec
            .secrets
            .iter()
            .map(|r| {
                self.secrets
                    .get(&r.secret_id)
                    .and_then(|s| s.version(r.version))
                    .map(|v| (r, v))
                    .ok_or_else(|| {
                        format!(
                            "{} {} version {} no longer exists",
                            r.kind, r.name, r.version
                        )
                    })
            })
            .collect()
    }

    /// Task `task_id`, if node `node` may have what it needs to run: it is
    /// assigned to that node, is to run, and has not ended; otherwise the
    /// reason it is refused.
    pub fn task_to_run(&self, task_id: &str, node: &str) -> Result<&crate::Task, String> {
        let Some(task) = self.tasks.get(task_id) else {
            return Err(format!("task {task_id} does not exist"));
        };
        if task.node_id.as_deref() != Some(node) {
            return Err(format!("task {task_id} is not assigned to this node"));
        }
        if task.desired_state != TaskState::Running || task.status.state.is_terminal() {
            return Err(format!(
                "task {task_id} is not to run (desired {}, state {})",
                task.desired_state, task.status.state
            ));
        }
        Ok(task)
    }

    /// The workload identity node `node` may have issued for task
    /// `task_id`: the task's service name and its identity settings, under
    /// the same conditions as [`State::task_files`], and only if its spec
    /// has an identity.
    pub fn task_identity(
        &self,
        task_id: &str,
        node: &str,
    ) -> Result<(&str, crate::IdentitySpec), String> {
        let task = self.task_to_run(task_id, node)?;
        let Some(identity) = task.spec.identity else {
            return Err(format!(
                "task {task_id} has no workload identity (its service was created with --no-identity)"
            ));
        };
        let Some(service) = self.services.get(&task.service_id) else {
            return Err(format!("the service of task {task_id} no longer exists"));
        };
        Ok((service.spec.name.as_str(), identity))
    }

    /// Checks that every reference of `spec` names a kept version of an
    /// existing secret of its kind.
    pub(crate) fn check_refs(&self, spec: &TaskSpec) -> Result<(), String> {
        for r in &spec.secrets {
            let Some(s) = self.secrets.get(&r.secret_id).filter(|s| s.kind == r.kind) else {
                return Err(format!("{} {} does not exist", r.kind, r.name));
            };
            if s.version(r.version).is_none() {
                return Err(format!(
                    "{} {} has no version {} (its latest is {})",
                    r.kind,
                    s.name,
                    r.version,
                    s.latest().map_or(0, |v| v.version)
                ));
            }
        }
        Ok(())
    }

    /// `spec` (a previous spec, to roll back to) with every reference to a
    /// version since dropped moved to its secret's latest version; `Err`
    /// names a secret that no longer exists.
    pub fn resolve_previous(&self, spec: &ServiceSpec) -> Result<ServiceSpec, String> {
        let mut spec = spec.clone();
        for r in &mut spec.task.secrets {
            let Some(s) = self.secrets.get(&r.secret_id).filter(|s| s.kind == r.kind) else {
                return Err(format!(
                    "the previous spec uses {} {}, which was removed",
                    r.kind, r.name
                ));
            };
            if s.version(r.version).is_none()
                && let Some(latest) = s.latest()
            {
                r.version = latest.version;
            }
        }
        Ok(spec)
    }

    pub(crate) fn create_secret(&mut self, secret: &Secret) -> Result<(), String> {
        let kind = secret.kind;
        if secret.id.is_empty() || secret.id.len() > MAX_SERVICE_ID_LEN {
            return Err(format!(
                "a {kind} id must have 1 to {MAX_SERVICE_ID_LEN} bytes"
            ));
        }
        if self.secrets.contains_key(&secret.id) {
            return Err(format!("{kind} id {} is already taken", secret.id));
        }
        validate_secret_name(kind, &secret.name)?;
        if self
            .secrets
            .values()
            .any(|s| s.kind == kind && s.name == secret.name)
        {
            return Err(format!("a {kind} named {} already exists", secret.name));
        }
        if self.secrets.len() >= MAX_SECRETS {
            return Err(format!(
                "the cluster holds {MAX_SECRETS} secrets and configs, the most it may"
            ));
        }
        validate_labels(&secret.labels)?;
        match secret.versions.as_slice() {
            [first] if first.version == 1 => {
                check_data(kind, &secret.name, first)?;
                self.check_room(first.data.len())?;
            }
            _ => return Err(format!("a new {kind} has exactly one version, 1")),
        }
        self.secrets.insert(secret.id.clone(), secret.clone());
        Ok(())
    }

    /// Adds a version to secret `id`; every service that follows it (an
    /// unpinned reference) gets a spec with the new version, which rolls
    /// its tasks as `service update` does.
    pub(crate) fn update_secret(
        &mut self,
        id: &str,
        version: &SecretVersion,
        now: i64,
    ) -> Result<(), String> {
        let Some(secret) = self.secrets.get(id) else {
            return Err(format!("no such secret or config: {id}"));
        };
        let (kind, name) = (secret.kind, secret.name.clone());
        let next = secret.latest().map_or(1, |v| v.version.saturating_add(1));
        if version.version != next {
            return Err(format!(
                "{kind} {name} is at version {}; the next is {next}",
                next - 1
            ));
        }
        if secret.versions.len() >= MAX_SECRET_VERSIONS {
            return Err(format!(
                "{kind} {name} keeps {MAX_SECRET_VERSIONS} versions that are still in use; \
                 let the services that use older ones finish their updates first"
            ));
        }
        check_data(kind, &name, version)?;
        self.check_room(version.data.len())?;
        let followers: Vec<(String, ServiceSpec)> = self
            .secret_followers(id)
            .map(|s| {
                let mut spec = s.spec.clone();
                for r in &mut spec.task.secrets {
                    if r.secret_id == id && !r.pinned {
                        r.version = version.version;
                    }
                }
                (s.id.clone(), spec)
            })
            .collect();
        if let Some(secret) = self.secrets.get_mut(id) {
            secret.versions.push(version.clone());
            secret.updated_at = now;
        }
        for (service, spec) in followers {
            let previous = self.services.get(&service).map(|s| s.spec.clone());
            self.set_spec(
                &service,
                spec,
                previous,
                false,
                false,
                now,
                crate::UpdatePhase::Updating,
            );
        }
        Ok(())
    }

    pub(crate) fn remove_secret(&mut self, id: &str) -> Result<(), String> {
        let Some(secret) = self.secrets.get(id) else {
            return Err(format!("no such secret or config: {id}"));
        };
        let users = self.secret_users(id);
        if !users.is_empty() {
            return Err(format!(
                "{} {} is in use by service{} {}",
                secret.kind,
                secret.name,
                if users.len() == 1 { "" } else { "s" },
                users.join(", ")
            ));
        }
        self.secrets.remove(id);
        Ok(())
    }

    /// Drops every version that is not its secret's latest and that no
    /// service spec and no task that has not ended uses.
    pub(crate) fn prune_secret_versions(&mut self) {
        if self.secrets.values().all(|s| s.versions.len() <= 1) {
            return;
        }
        let mut used: std::collections::BTreeSet<(&str, u64)> = std::collections::BTreeSet::new();
        let specs = self.services.values().map(|s| &s.spec.task).chain(
            self.tasks
                .values()
                .filter(|t| !t.status.state.is_terminal())
                .map(|t| &t.spec),
        );
        for spec in specs {
            for r in &spec.secrets {
                used.insert((r.secret_id.as_str(), r.version));
            }
        }
        let drop: Vec<(String, u64)> = self
            .secrets
            .values()
            .flat_map(|s| {
                let latest = s.latest().map_or(0, |v| v.version);
                s.versions
                    .iter()
                    .filter(move |v| v.version != latest)
                    .map(move |v| (s.id.as_str(), v.version))
            })
            .filter(|key| !used.contains(key))
            .map(|(id, v)| (id.to_owned(), v))
            .collect();
        for (id, v) in drop {
            if let Some(s) = self.secrets.get_mut(&id) {
                s.versions.retain(|x| x.version != v);
            }
        }
    }
}

impl State {
    /// The bytes every secret and config version holds together.
    pub fn secret_bytes(&self) -> usize {
        self.secrets
            .values()
            .flat_map(|s| &s.versions)
            .map(|v| v.data.len())
            .sum()
    }

    fn check_room(&self, adding: usize) -> Result<(), String> {
        let held = self.secret_bytes();
        if held.saturating_add(adding) > MAX_TOTAL_SECRET_BYTES {
            return Err(format!(
                "the cluster's secrets and configs hold {held} bytes; {adding} more would pass the \
                 {MAX_TOTAL_SECRET_BYTES}-byte limit: remove unused ones first"
            ));
        }
        Ok(())
    }
}

fn check_data(kind: SecretKind, name: &str, v: &SecretVersion) -> Result<(), String> {
    if v.data.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "{kind} {name} is {} bytes; at most {MAX_SECRET_BYTES} (500 KiB) are allowed",
            v.data.len()
        ));
    }
    if v.digest.len() > 128 {
        return Err(format!("{kind} {name}: the digest is over 128 bytes"));
    }
    Ok(())
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > crate::MAX_SERVICE_LABELS {
        return Err(format!(
            "{} labels; at most {} are allowed",
            labels.len(),
            crate::MAX_SERVICE_LABELS
        ));
    }
    for (k, v) in labels {
        if k.is_empty()
            || k.len() + v.len() > crate::MAX_ENTRY_BYTES
            || (k.contains('\0') || v.contains('\0'))
        {
            return Err(format!(
                "label {k:?} is empty, too long or holds a NUL byte"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["db", "db_password", "a.b-c_d", "A1", "x"] {
            validate_secret_name(SecretKind::Secret, ok).unwrap();
        }
        for bad in [
            "",
            "-db",
            "db-",
            "db pass",
            "db/x",
            ".db",
            "é",
            &"a".repeat(65),
        ] {
            assert!(
                validate_secret_name(SecretKind::Secret, bad).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn targets_are_single_file_names() {
        validate_target(SecretKind::Secret, "db.pem").unwrap();
        for bad in ["", ".", "..", "a/b", "/etc/x", "a\0b", "identity"] {
            assert!(
                validate_target(SecretKind::Secret, bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        // Only secrets share a directory with the task's identity.
        validate_target(SecretKind::Config, "identity").unwrap();
    }

    #[test]
    fn data_never_prints_and_round_trips_as_base64() {
        let d = SecretData::new(b"hunter2".to_vec());
        assert_eq!(format!("{d:?}"), "SecretData(7 bytes)");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, "\"aHVudGVyMg==\"");
        let back: SecretData = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose_secret(), b"hunter2");
        assert!(serde_json::from_str::<SecretData>("\"not base64!\"").is_err());
        let huge = format!("\"{}\"", "A".repeat(MAX_SECRET_BYTES.div_ceil(3) * 4 + 4));
        let err = serde_json::from_str::<SecretData>(&huge).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let r = |kind, target: &str| SecretRef {
            kind,
            secret_id: "S".into(),
            name: "db".into(),
            version: 1,
            pinned: false,
            target: target.into(),
            mode: 0o400,
        };
        validate_refs(&[r(SecretKind::Secret, "a"), r(SecretKind::Config, "a")]).unwrap();
        let err =
            validate_refs(&[r(SecretKind::Secret, "a"), r(SecretKind::Secret, "a")]).unwrap_err();
        assert!(err.contains("target"), "{err}");
        let mut bad_mode = r(SecretKind::Secret, "a");
        bad_mode.mode = 0o1777;
        assert!(validate_refs(&[bad_mode]).is_err());
    }

    fn version(v: u64, data: &[u8]) -> SecretVersion {
        SecretVersion {
            version: v,
            data: SecretData::new(data.to_vec()),
            digest: format!("hmac-sha256:{v}"),
            created_at: 10 * v as i64,
        }
    }

    fn secret(id: &str, name: &str, data: &[u8]) -> Secret {
        Secret {
            id: id.into(),
            kind: SecretKind::Secret,
            name: name.into(),
            labels: BTreeMap::new(),
            created_at: 10,
            updated_at: 10,
            versions: vec![version(1, data)],
        }
    }

    fn uses(id: &str, name: &str, version: u64, pinned: bool) -> SecretRef {
        SecretRef {
            kind: SecretKind::Secret,
            secret_id: id.into(),
            name: name.into(),
            version,
            pinned,
            target: name.into(),
            mode: DEFAULT_SECRET_MODE,
        }
    }

    fn service(id: &str, name: &str, refs: Vec<SecretRef>) -> crate::Service {
        crate::Service {
            id: id.into(),
            spec: ServiceSpec {
                name: name.into(),
                task: TaskSpec {
                    image: "/bin/true".into(),
                    secrets: refs,
                    ..TaskSpec::default()
                },
                ..ServiceSpec::default()
            },
            previous_spec: None,
            version: 1,
            created_at: 0,
            updated_at: 0,
            update_status: None,
        }
    }

    /// A task of `service` (as it is now) on node `n1`.
    fn place(st: &mut State, task: &str, service: &str, state: TaskState) {
        let svc = &st.services[service];
        let t = crate::Task {
            id: task.into(),
            service_id: service.into(),
            slot: 1,
            node_id: Some("n1".into()),
            version: svc.version,
            spec: svc.spec.task.clone(),
            desired_state: TaskState::Running,
            status: crate::TaskStatus {
                state,
                since: 0,
                message: String::new(),
                error: None,
                runtime_id: None,
                exit_code: None,
            },
            attempt: 0,
            created_at: 0,
            identity: None,
        };
        st.tasks.insert(task.into(), t);
    }

    #[test]
    fn identity_only_for_a_running_task_of_a_service_with_one_on_its_node() {
        let mut st = cluster();
        place(&mut st, "T1", "A", TaskState::Running);
        let err = st.task_identity("T1", "n1").unwrap_err();
        assert!(err.contains("--no-identity"), "{err}");
        let mut spec = st.services["A"].spec.clone();
        spec.task.identity = Some(crate::IdentitySpec { ttl_secs: 600 });
        st.apply(&Command::UpdateService {
            id: "A".into(),
            spec,
            force: false,
            now: 1,
        })
        .unwrap();
        place(&mut st, "T2", "A", TaskState::Running);
        let (name, id) = st.task_identity("T2", "n1").unwrap();
        assert_eq!((name, id.ttl_secs), ("follows", 600));
        assert!(
            st.task_identity("T2", "n2")
                .unwrap_err()
                .contains("not assigned")
        );
        assert!(
            st.task_identity("T9", "n1")
                .unwrap_err()
                .contains("does not exist")
        );
        let record = |st: &mut State, task: &str, node: &str, serial: &str| {
            st.apply(&Command::RecordIdentity {
                task: task.into(),
                node: node.into(),
                identity: crate::TaskIdentity {
                    serial: serial.into(),
                    not_after: 100,
                    issuer: "fp".into(),
                },
            })
            .unwrap();
        };
        record(&mut st, "T2", "n1", "01");
        assert_eq!(st.tasks["T2"].identity.as_ref().unwrap().serial, "01");
        // Another node's word about the task: ignored.
        record(&mut st, "T2", "n2", "02");
        assert_eq!(st.tasks["T2"].identity.as_ref().unwrap().serial, "01");
        // A task that ended gets none.
        place(&mut st, "T3", "A", TaskState::Complete);
        assert!(
            st.task_identity("T3", "n1")
                .unwrap_err()
                .contains("not to run")
        );
        record(&mut st, "T3", "n1", "03");
        assert!(st.tasks["T3"].identity.is_none());
    }

    fn cluster() -> State {
        let mut st = State::default();
        st.apply(&Command::CreateSecret(secret("S1", "db", b"v1")))
            .unwrap();
        st.apply(&Command::CreateService(service(
            "A",
            "follows",
            vec![uses("S1", "db", 1, false)],
        )))
        .unwrap();
        st.apply(&Command::CreateService(service(
            "B",
            "pinned",
            vec![uses("S1", "db", 1, true)],
        )))
        .unwrap();
        st
    }

    use crate::Command;

    #[test]
    fn a_service_needs_an_existing_version() {
        let mut st = cluster();
        let err = st
            .apply(&Command::CreateService(service(
                "C",
                "c",
                vec![uses("S9", "nope", 1, false)],
            )))
            .unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        let err = st
            .apply(&Command::CreateService(service(
                "C",
                "c",
                vec![uses("S1", "db", 7, true)],
            )))
            .unwrap_err();
        assert!(err.contains("no version 7"), "{err}");
        assert!(!st.services.contains_key("C"));
    }

    #[test]
    fn names_are_unique_per_kind_and_data_is_bounded() {
        let mut st = cluster();
        let err = st
            .apply(&Command::CreateSecret(secret("S2", "db", b"x")))
            .unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        let mut config = secret("S2", "db", b"x");
        config.kind = SecretKind::Config;
        st.apply(&Command::CreateSecret(config)).unwrap();
        let big = secret("S3", "big", &vec![0u8; MAX_SECRET_BYTES + 1]);
        let err = st.apply(&Command::CreateSecret(big)).unwrap_err();
        assert!(err.contains("at most"), "{err}");
        assert_eq!(st.secrets.len(), 2);
    }

    #[test]
    fn an_update_rolls_followers_and_keeps_the_old_version_while_used() {
        let mut st = cluster();
        place(&mut st, "t-a", "A", TaskState::Running);
        place(&mut st, "t-b", "B", TaskState::Running);
        st.apply(&Command::UpdateSecret {
            id: "S1".into(),
            version: version(2, b"v2"),
            now: 50,
        })
        .unwrap();
        let a = &st.services["A"];
        assert_eq!(a.spec.task.secrets[0].version, 2, "the follower moved");
        assert_eq!(a.version, 2);
        assert_eq!(
            a.update_status.as_ref().map(|u| u.phase),
            Some(crate::UpdatePhase::Updating)
        );
        let b = &st.services["B"];
        assert_eq!(b.spec.task.secrets[0].version, 1, "the pinned one stayed");
        assert_eq!(b.version, 1);
        // Version 1 is still used (service B, and A's running task).
        let kept: Vec<u64> = st.secrets["S1"]
            .versions
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(kept, vec![1, 2]);
        // The old task of A still gets version 1; B's task too.
        let files = st.task_files("t-a", "n1").unwrap();
        assert_eq!(files[0].1.data.expose_secret(), b"v1");
        // B moves on; A's old task ends: version 1 is dropped.
        st.apply(&Command::UpdateService {
            id: "B".into(),
            spec: {
                let mut spec = st.services["B"].spec.clone();
                spec.task.secrets = vec![uses("S1", "db", 2, false)];
                spec
            },
            force: false,
            now: 60,
        })
        .unwrap();
        assert_eq!(st.secrets["S1"].versions.len(), 2, "tasks still hold 1");
        for t in ["t-a", "t-b"] {
            st.tasks.get_mut(t).unwrap().status.state = TaskState::Shutdown;
        }
        st.apply(&Command::Reconcile {
            changes: vec![],
            now: 70,
        })
        .unwrap();
        let kept: Vec<u64> = st.secrets["S1"]
            .versions
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(kept, vec![2]);
    }

    #[test]
    fn an_update_must_be_the_next_version() {
        let mut st = cluster();
        let err = st
            .apply(&Command::UpdateSecret {
                id: "S1".into(),
                version: version(3, b"x"),
                now: 1,
            })
            .unwrap_err();
        assert!(err.contains("the next is 2"), "{err}");
        assert_eq!(st.secrets["S1"].versions.len(), 1);
    }

    #[test]
    fn a_secret_in_use_cannot_be_removed() {
        let mut st = cluster();
        let err = st
            .apply(&Command::RemoveSecret { id: "S1".into() })
            .unwrap_err();
        assert!(err.contains("in use by services follows, pinned"), "{err}");
        st.apply(&Command::RemoveService { id: "A".into() })
            .unwrap();
        st.apply(&Command::RemoveService { id: "B".into() })
            .unwrap();
        st.apply(&Command::RemoveSecret { id: "S1".into() })
            .unwrap();
        assert!(st.secrets.is_empty());
    }

    #[test]
    fn only_the_assigned_node_of_a_live_task_gets_the_data() {
        let mut st = cluster();
        place(&mut st, "t-a", "A", TaskState::Assigned);
        let files = st.task_files("t-a", "n1").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0.target, "db");
        let err = st.task_files("t-a", "n2").unwrap_err();
        assert!(err.contains("not assigned to this node"), "{err}");
        let err = st.task_files("nope", "n1").unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        st.tasks.get_mut("t-a").unwrap().desired_state = TaskState::Shutdown;
        let err = st.task_files("t-a", "n1").unwrap_err();
        assert!(err.contains("not to run"), "{err}");
        st.tasks.get_mut("t-a").unwrap().desired_state = TaskState::Running;
        st.tasks.get_mut("t-a").unwrap().status.state = TaskState::Failed;
        assert!(st.task_files("t-a", "n1").is_err(), "an ended task");
    }

    #[test]
    fn a_rollback_to_a_dropped_version_takes_the_latest() {
        let mut st = cluster();
        st.apply(&Command::UpdateSecret {
            id: "S1".into(),
            version: version(2, b"v2"),
            now: 50,
        })
        .unwrap();
        // B (pinned at 1) moves to 2 by hand, so nothing holds 1.
        let mut spec = st.services["B"].spec.clone();
        spec.task.secrets[0].version = 2;
        st.apply(&Command::UpdateService {
            id: "B".into(),
            spec,
            force: false,
            now: 60,
        })
        .unwrap();
        assert_eq!(st.secrets["S1"].versions.len(), 1);
        // A's previous spec names version 1, which is gone.
        st.apply(&Command::RollbackService {
            id: "A".into(),
            now: 70,
        })
        .unwrap();
        assert_eq!(st.services["A"].spec.task.secrets[0].version, 2);
        // A secret that is gone altogether cannot come back.
        let mut spec = st.services["A"].spec.clone();
        spec.task.secrets.clear();
        st.apply(&Command::UpdateService {
            id: "A".into(),
            spec,
            force: false,
            now: 80,
        })
        .unwrap();
        st.apply(&Command::RemoveService { id: "B".into() })
            .unwrap();
        st.apply(&Command::RemoveSecret { id: "S1".into() })
            .unwrap();
        let err = st
            .apply(&Command::RollbackService {
                id: "A".into(),
                now: 90,
            })
            .unwrap_err();
        assert!(err.contains("was removed"), "{err}");
        assert!(st.services["A"].spec.task.secrets.is_empty());
    }
}
