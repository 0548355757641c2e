//! Audit records and their canonical JSON form (the Merkle leaf bytes).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use moat_pki::NodeId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::RecordError;
use crate::hash::{Hash, leaf_hash};
use crate::key::AuditKey;

/// Largest canonical record accepted, checked before parsing.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Most entries in a record's `details`.
pub const MAX_DETAILS: usize = 32;
/// Longest [`Text`] (target, reason, detail value), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest [`Actor`], [`Action`] or detail key, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// One audit record: an [`Event`] with its place in the log.
///
/// Once built it is valid; its leaf bytes are [`Record::to_line`], the
/// canonical JSON described in `docs/formats/audit.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    seq: u64,
    prev: Hash,
    time: Timestamp,
    event: Event,
}

/// What happened: everything in a record but its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The node that recorded the event.
    pub node: NodeId,
    /// Who caused it.
    pub actor: Actor,
    /// What was done.
    pub action: Action,
    /// What it was done to.
    pub target: Text,
    /// How it ended.
    pub outcome: Outcome,
    /// More facts, as strings; secrets only as keyed hashes.
    pub details: Details,
}

impl Record {
    /// Builds a record. Sequence numbers start at 1; record 1 links to
    /// [`Hash::ZERO`]. Appending with
    /// [`MerkleLog::append_record`](crate::MerkleLog::append_record) checks
    /// the link; prefer [`MerkleLog::seal`](crate::MerkleLog::seal), which
    /// fills both in.
    pub fn new(seq: u64, prev: Hash, time: Timestamp, event: Event) -> Result<Self, RecordError> {
        if seq == 0 {
            return Err(RecordError::field("seq", "sequence numbers start at 1"));
        }
        if seq == 1 && prev != Hash::ZERO {
            return Err(RecordError::field(
                "prev",
                "record 1 links to the all-zero hash",
            ));
        }
        Ok(Self::from_parts(seq, prev, time, event))
    }

    pub(crate) fn from_parts(seq: u64, prev: Hash, time: Timestamp, event: Event) -> Self {
        Self {
            seq,
            prev,
            time,
            event,
        }
    }

    /// The sequence number: 1 for the first record, +1 for each next one.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The leaf hash of the previous record ([`Hash::ZERO`] for record 1).
    pub fn prev(&self) -> Hash {
        self.prev
    }

    /// When the event happened.
    pub fn time(&self) -> Timestamp {
        self.time
    }

    /// What happened.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The canonical JSON form, without a newline: the Merkle leaf.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing strings, integers and a string map cannot fail.
        serde_json::to_vec(&self.wire()).expect("an audit record always serializes")
    }

    fn wire(&self) -> Wire<'_> {
        let e = self.event.wire();
        Wire {
            seq: self.seq,
            prev: Cow::Owned(self.prev.to_hex()),
            time: Cow::Owned(self.time.to_string()),
            node: e.node,
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            reason: e.reason,
            details: e.details,
        }
    }

    /// The record's RFC 6962 leaf hash.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.to_line())
    }

    /// Parses one record line (without its newline). Only the canonical
    /// form is accepted: the bytes must be exactly what
    /// [`Record::to_line`] writes for the record they describe.
    pub fn from_line(line: &[u8]) -> Result<Self, RecordError> {
        if line.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge {
                bytes: line.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let wire: Wire<'_> = serde_json::from_slice(line).map_err(|e| RecordError::Malformed {
            reason: e.to_string(),
        })?;
        let seq = wire.seq;
        let record = Self::from_wire(wire)?;
        if record.to_line() != line {
            return Err(RecordError::NotCanonical { seq });
        }
        Ok(record)
    }

    fn from_wire(wire: Wire<'_>) -> Result<Self, RecordError> {
        let prev = wire
            .prev
            .parse()
            .map_err(|e| RecordError::field("prev", format!("{e}")))?;
        let time = wire.time.parse()?;
        let event = Event::from_wire(EventWire {
            node: wire.node,
            actor: wire.actor,
            action: wire.action,
            target: wire.target,
            outcome: wire.outcome,
            reason: wire.reason,
            details: wire.details,
        })?;
        Record::new(wire.seq, prev, time, event)
    }
}

impl Event {
    fn wire(&self) -> EventWire<'_> {
        EventWire {
            node: Cow::Owned(self.node.to_string()),
            actor: Cow::Borrowed(self.actor.as_str()),
            action: Cow::Borrowed(self.action.as_str()),
            target: Cow::Borrowed(self.target.as_str()),
            outcome: Cow::Borrowed(self.outcome.as_str()),
            reason: Cow::Borrowed(self.outcome.reason()),
            details: self
                .details
                .0
                .iter()
                .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                .collect(),
        }
    }

    fn from_wire(wire: EventWire<'_>) -> Result<Self, RecordError> {
        let mut details = Details::new();
        for (k, v) in &wire.details {
            details.insert(k, v)?;
        }
        Ok(Event {
            node: wire
                .node
                .parse()
                .map_err(|e| RecordError::field("node", format!("{e}")))?,
            actor: wire.actor.parse()?,
            action: wire.action.parse()?,
            target: Text::new("target", wire.target.as_ref())?,
            outcome: Outcome::from_parts(&wire.outcome, &wire.reason)?,
            details,
        })
    }
}

/// An event's serde form is a record's fields without `seq`, `prev` and
/// `time` (used where an event travels before it has a place in the log,
/// such as a raft entry); deserializing validates every field.
impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.wire(), s)
    }
}

impl<'de> serde::Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = EventWire::deserialize(d)?;
        Event::from_wire(wire).map_err(serde::de::Error::custom)
    }
}

/// A record's serde form is its canonical JSON object (used inside proof
/// files); deserializing validates every field.
impl serde::Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.wire(), s)
    }
}

impl<'de> serde::Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        Record::from_wire(wire).map_err(serde::de::Error::custom)
    }
}

/// The wire form; field order here is the canonical field order.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    target: Cow<'a, str>,
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    details: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// The wire form of an [`Event`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventWire<'a> {
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    target: Cow<'a, str>,
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    details: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// A point in time with whole-second precision, in UTC.
///
/// Text form (and serde form): RFC 3339 `YYYY-MM-DDTHH:MM:SSZ`, exactly;
/// no fractions, no other offsets. Years 1970 to 9999.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// 9999-12-31T23:59:59Z.
    const MAX: i64 = 253_402_300_799;

    /// The time `secs` seconds after the Unix epoch.
    pub fn from_unix(secs: i64) -> Result<Self, RecordError> {
        if (0..=Self::MAX).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(RecordError::field(
                "time",
                format!("{secs} is outside 1970 to 9999"),
            ))
        }
    }

    /// `time`, truncated to the second.
    pub fn from_datetime(time: OffsetDateTime) -> Result<Self, RecordError> {
        Self::from_unix(time.unix_timestamp())
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.0
    }

    /// As a `time` value, in UTC.
    pub fn to_datetime(self) -> OffsetDateTime {
        // In range by construction.
        OffsetDateTime::from_unix_timestamp(self.0).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Years 1970..=9999 in UTC always format.
        let text = self
            .to_datetime()
            .format(&Rfc3339)
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = RecordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            RecordError::field(
                "time",
                format!(
                    "{:?} is not an RFC 3339 UTC time of the form 2025-01-31T12:00:00Z",
                    s.chars().take(40).collect::<String>()
                ),
            )
        };
        let parsed = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| bad())?;
        let t = Self::from_datetime(parsed)?;
        if t.to_string() != s {
            return Err(bad());
        }
        Ok(t)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $allowed:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Cow<'static, str>);

        impl $name {
            /// The text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            fn check(s: &str) -> Result<(), RecordError> {
                if s.is_empty() || s.len() > MAX_NAME_BYTES || !s.bytes().all($allowed) {
                    return Err(RecordError::field(
                        $field,
                        format!(concat!("must be 1 to {} characters of ", $rule), MAX_NAME_BYTES),
                    ));
                }
                Ok(())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = RecordError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::check(s)?;
                Ok(Self(Cow::Owned(s.to_owned())))
            }
        }
    };
}

name_type!(
    /// Who caused an event: `node:<node id>` for a node acting on its own
    /// or another's behalf, `operator:local` (or `operator:uid=<n>`) for a
    /// person at a node's control socket. Characters: `A-Za-z0-9._:=@/-`.
    Actor,
    "actor",
    |b: u8| b.is_ascii_alphanumeric() || b"._:=@/-".contains(&b),
    "A-Za-z0-9._:=@/-"
);

impl Actor {
    /// A node acting by itself (renewal, forwarding, a raft decision).
    pub fn node(id: NodeId) -> Self {
        Self(Cow::Owned(format!("node:{id}")))
    }

    /// A person at a node's control socket whose user id is unknown.
    pub fn local_operator() -> Self {
        Self(Cow::Borrowed("operator:local"))
    }

    /// A person at a node's control socket with user id `uid`.
    pub fn local_user(uid: u32) -> Self {
        Self(Cow::Owned(format!("operator:uid={uid}")))
    }
}

name_type!(
    /// What was done: lower-case dotted words such as `cert.issue`.
    /// The vocabulary moat records is in the associated constants.
    Action,
    "action",
    |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.',
    "a-z0-9_."
);

macro_rules! actions {
    ($($(#[$doc:meta])* $konst:ident = $text:literal;)*) => {
        impl Action {
            $($(#[$doc])* pub const $konst: Action = Action(Cow::Borrowed($text));)*

            /// Every action in moat's vocabulary.
            pub const ALL: &'static [Action] = &[$(Action::$konst),*];
        }
    };
}

actions! {
    /// A cluster was created.
    CLUSTER_INIT = "cluster.init";
    /// A node asked to join (outcome: success, or denied with a reason;
    /// details: token fingerprint, source address).
    NODE_JOIN = "node.join";
    /// A certificate was issued (details: serial, role, not_after).
    CERT_ISSUE = "cert.issue";
    /// A certificate was renewed (details: serial, role, not_after).
    CERT_RENEW = "cert.renew";
    /// A join token was created.
    TOKEN_CREATE = "token.create";
    /// A join token was rotated.
    TOKEN_ROTATE = "token.rotate";
    /// A join token was revoked.
    TOKEN_REVOKE = "token.revoke";
    /// A node was promoted to manager.
    NODE_PROMOTE = "node.promote";
    /// A node was demoted to worker.
    NODE_DEMOTE = "node.demote";
    /// A node was removed from the cluster.
    NODE_REMOVE = "node.remove";
    /// A node's labels changed.
    NODE_LABEL = "node.label";
    /// A node left the cluster.
    NODE_LEAVE = "node.leave";
    /// A cluster policy changed.
    POLICY_UPDATE = "policy.update";
    /// Autolock was turned on.
    AUTOLOCK_ENABLE = "autolock.enable";
    /// Autolock was turned off.
    AUTOLOCK_DISABLE = "autolock.disable";
    /// A node was unlocked (or an unlock failed).
    NODE_UNLOCK = "node.unlock";
    /// The unlock key was rotated.
    UNLOCK_KEY_ROTATE = "unlock_key.rotate";
    /// The store's data key was rotated.
    DEK_ROTATE = "dek.rotate";
    /// A backup was taken.
    BACKUP_CREATE = "backup.create";
    /// A backup was restored.
    BACKUP_RESTORE = "backup.restore";
    /// A phase of a root CA rotation (details: phase).
    CA_ROTATE = "ca.rotate";
    /// Tampering was detected (details: file, what).
    TAMPER_DETECT = "tamper.detect";
    /// A signed tree head of the audit log was made.
    AUDIT_HEAD = "audit.head";
    /// A node forwarded a journal event that could not be recorded as
    /// sent (outcome denied; details: what the node claimed).
    AUDIT_FORWARD = "audit.forward";
    /// Records of the log were archived and dropped from the managers
    /// (details: first, last, digest, root, before).
    AUDIT_ARCHIVE = "audit.archive";
    /// A service was created (details: mode, replicas, runtime, image).
    SERVICE_CREATE = "service.create";
    /// A service's spec changed (details: version, what changed).
    SERVICE_UPDATE = "service.update";
    /// A service's replica count changed (details: replicas).
    SERVICE_SCALE = "service.scale";
    /// A service went back to its previous spec.
    SERVICE_ROLLBACK = "service.rollback";
    /// A service was removed with its tasks.
    SERVICE_REMOVE = "service.remove";
    /// The scheduler placed tasks (details per service: tasks placed on
    /// each node, tasks left pending and why).
    TASK_PLACE = "task.place";
    /// A secret was created (details: id, size, digest keyed under the
    /// audit key; never the data).
    SECRET_CREATE = "secret.create";
    /// A secret got a new version (details: version, size, keyed digest,
    /// the services that roll onto it).
    SECRET_UPDATE = "secret.update";
    /// A secret was removed.
    SECRET_REMOVE = "secret.remove";
    /// A node asked for a task's secrets and was refused (outcome denied;
    /// details: node, task, the secrets the task uses, why).
    SECRET_DENY = "secret.deny";
    /// A task's first workload certificate (X.509-SVID), or its first
    /// from a new root, was issued through its node (details: node, SPIFFE
    /// ID, serial, not_after, issuer); renewals are recorded on the task.
    IDENTITY_ISSUE = "identity.issue";
    /// A node asked for a workload certificate and was refused (outcome
    /// denied; details: node, task, why).
    IDENTITY_DENY = "identity.deny";
    /// A config was created (details: id, size, keyed digest).
    CONFIG_CREATE = "config.create";
    /// A config got a new version.
    CONFIG_UPDATE = "config.update";
    /// A config was removed.
    CONFIG_REMOVE = "config.remove";
}

/// Free text: a target, a reason, a detail value. At most
/// [`MAX_TEXT_BYTES`] bytes of Unicode without control characters or
/// bidirectional overrides, so it prints safely in a terminal.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text(String);

impl Text {
    /// Checks `text` for the field named `field` (named in the error).
    pub fn new(field: &'static str, text: &str) -> Result<Self, RecordError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(RecordError::field(
                field,
                format!("{} bytes is longer than {MAX_TEXT_BYTES}", text.len()),
            ));
        }
        if let Some(c) = text.chars().find(|c| !printable(*c)) {
            return Err(RecordError::field(
                field,
                format!("character U+{:04X} is not allowed", c as u32),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn printable(c: char) -> bool {
    !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for Text {
    type Err = RecordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new("text", s)
    }
}

/// How an event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was done.
    Success,
    /// It was refused (authorization, policy, a bad token).
    Denied {
        /// Why.
        reason: Text,
    },
    /// It was attempted and went wrong.
    Failed {
        /// Why.
        reason: Text,
    },
}

impl Outcome {
    /// `success`, `denied` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied { .. } => "denied",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The reason, empty for a success.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Success => "",
            Outcome::Denied { reason } | Outcome::Failed { reason } => reason.as_str(),
        }
    }

    /// A refusal for `reason`.
    pub fn denied(reason: &str) -> Result<Self, RecordError> {
        Ok(Outcome::Denied {
            reason: Text::new("reason", reason)?,
        })
    }

    /// A failure for `reason`.
    pub fn failed(reason: &str) -> Result<Self, RecordError> {
        Ok(Outcome::Failed {
            reason: Text::new("reason", reason)?,
        })
    }

    fn from_parts(outcome: &str, reason: &str) -> Result<Self, RecordError> {
        match outcome {
            "success" if reason.is_empty() => Ok(Outcome::Success),
            "success" => Err(RecordError::field("reason", "a success carries no reason")),
            "denied" => Self::denied(reason),
            "failed" => Self::failed(reason),
            _ => Err(RecordError::field(
                "outcome",
                "must be success, denied or failed",
            )),
        }
    }
}

/// A record's details: up to [`MAX_DETAILS`] string values under names of
/// `a-z0-9_.-`, kept sorted by name (the canonical order).
///
/// A secret goes in only through [`Details::insert_secret`], as its keyed
/// hash.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details(BTreeMap<String, Text>);

impl Details {
    /// No details.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to the non-secret `value`.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), RecordError> {
        let value = Text::new("details", value)?;
        self.insert_text(key, value)
    }

    /// Sets `key` to the keyed hash of the secret `value` under `audit_key`
    /// (see [`AuditKey::hash`]).
    pub fn insert_secret(
        &mut self,
        key: &str,
        audit_key: &AuditKey,
        value: &[u8],
    ) -> Result<(), RecordError> {
        let hashed = Text::new("details", &audit_key.hash(value))?;
        self.insert_text(key, hashed)
    }

    fn insert_text(&mut self, key: &str, value: Text) -> Result<(), RecordError> {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_NAME_BYTES
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !key_ok {
            return Err(RecordError::field(
                "details",
                format!("a detail name is 1 to {MAX_NAME_BYTES} characters of a-z0-9_.-"),
            ));
        }
        if self.0.len() >= MAX_DETAILS && !self.0.contains_key(key) {
            return Err(RecordError::field(
                "details",
                format!("more than {MAX_DETAILS} entries"),
            ));
        }
        self.0.insert(key.to_owned(), value);
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(Text::as_str)
    }

    /// The entries, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> NodeId {
        "0123456789abcdefghijklmn00".parse().unwrap()
    }

    fn event() -> Event {
        let mut details = Details::new();
        details.insert("serial", "4f1c").unwrap();
        details.insert("role", "worker").unwrap();
        Event {
            node: node(),
            actor: Actor::local_operator(),
            action: Action::CERT_ISSUE,
            target: Text::new("target", "node:0123456789abcdefghijklmn00").unwrap(),
            outcome: Outcome::Success,
            details,
        }
    }

    #[test]
    fn canonical_form_is_fixed() {
        let r = Record::new(
            1,
            Hash::ZERO,
            Timestamp::from_unix(1_700_000_000).unwrap(),
            event(),
        )
        .unwrap();
        let line = String::from_utf8(r.to_line()).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"{"seq":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""time":"2023-11-14T22:13:20Z","node":"0123456789abcdefghijklmn00","#,
                r#""actor":"operator:local","action":"cert.issue","#,
                r#""target":"node:0123456789abcdefghijklmn00","outcome":"success","reason":"","#,
                r#""details":{"role":"worker","serial":"4f1c"}}"#
            )
        );
        assert_eq!(Record::from_line(line.as_bytes()).unwrap(), r);
    }

    #[test]
    fn non_canonical_lines_are_rejected() {
        let r = Record::new(1, Hash::ZERO, Timestamp::from_unix(5).unwrap(), event()).unwrap();
        let line = String::from_utf8(r.to_line()).unwrap();
        for bad in [
            line.replacen("{\"seq\":1,", "{ \"seq\":1,", 1),
            line.replacen(
                "\"role\":\"worker\",\"serial\":\"4f1c\"",
                "\"serial\":\"4f1c\",\"role\":\"worker\"",
                1,
            ),
            line.replacen("worker", "w\\u006frker", 1),
            line.replacen("1970-01-01T00:00:05Z", "1970-01-01T00:00:05.0Z", 1),
        ] {
            assert!(Record::from_line(bad.as_bytes()).is_err(), "{bad}");
        }
        let extra = line.replacen("{\"seq\":1,", "{\"seq\":1,\"x\":1,", 1);
        assert!(matches!(
            Record::from_line(extra.as_bytes()),
            Err(RecordError::Malformed { .. })
        ));
    }

    #[test]
    fn fields_are_validated() {
        assert!("".parse::<Actor>().is_err());
        assert!("operator local".parse::<Actor>().is_err());
        assert!("Cert.Issue".parse::<Action>().is_err());
        assert!(Text::new("target", "a\u{1b}[31m").is_err());
        assert!(Text::new("target", "a\u{202e}b").is_err());
        assert!(Text::new("target", &"x".repeat(MAX_TEXT_BYTES + 1)).is_err());
        assert!(Outcome::from_parts("success", "why").is_err());
        assert!(Outcome::from_parts("maybe", "").is_err());
        let mut d = Details::new();
        assert!(d.insert("Bad Key", "v").is_err());
        for i in 0..MAX_DETAILS {
            d.insert(&format!("k{i}"), "v").unwrap();
        }
        assert!(d.insert("one_more", "v").is_err());
        d.insert("k0", "replaced").unwrap();
        assert!(Record::new(0, Hash::ZERO, Timestamp::from_unix(0).unwrap(), event()).is_err());
        assert!(
            Record::new(
                1,
                leaf_hash(b"x"),
                Timestamp::from_unix(0).unwrap(),
                event()
            )
            .is_err()
        );
        assert!(Timestamp::from_unix(-1).is_err());
        assert!("2025-01-31T12:00:00+01:00".parse::<Timestamp>().is_err());
        assert_eq!(
            "2025-01-31T12:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .to_string(),
            "2025-01-31T12:00:00Z"
        );
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            Record::from_line(&big),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn secrets_enter_details_only_hashed() {
        let key = AuditKey::from_slice(&[1u8; 32]).unwrap();
        let mut d = Details::new();
        d.insert_secret("token", &key, b"MOATTKN-1-very-secret")
            .unwrap();
        let v = d.get("token").unwrap();
        assert!(v.starts_with("hmac-sha256:"));
        assert!(!v.contains("very-secret"));
        assert!(key.matches(b"MOATTKN-1-very-secret", v));
    }

    #[test]
    fn vocabulary_is_valid() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>().unwrap(), *a);
        }
        assert_eq!(
            Actor::node(node()).to_string(),
            "node:0123456789abcdefghijklmn00"
        );
        assert!(Actor::local_user(1000).as_str().parse::<Actor>().is_ok());
    }

    proptest! {
        #[test]
        fn records_round_trip(
            seq in 2u64..u64::MAX,
            secs in 0i64..253_402_300_799,
            target in "\\PC{0,40}",
            reason in "\\PC{1,40}",
            values in proptest::collection::btree_map("[a-z0-9_.-]{1,10}", "\\PC{0,30}", 0..8),
        ) {
            let Ok(target) = Text::new("target", &target) else { return Ok(()) };
            let Ok(outcome) = Outcome::failed(&reason) else { return Ok(()) };
            let mut details = Details::new();
            for (k, v) in &values {
                if details.insert(k, v).is_err() { return Ok(()); }
            }
            let e = Event { target, outcome, details, ..event() };
            let r = Record::new(seq, leaf_hash(b"p"), Timestamp::from_unix(secs).unwrap(), e).unwrap();
            let line = r.to_line();
            prop_assert!(!line.contains(&b'\n'));
            prop_assert_eq!(Record::from_line(&line).unwrap(), r);
        }

        #[test]
        fn from_line_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Record::from_line(&bytes);
        }
    }
}
