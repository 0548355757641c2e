//! The decrypted store as JSON (`moat store dump --docker-swarm DIR`),
//! redacted unless secrets are asked for.
//!
//! The dump walks each object's raw bytes with a table per message type
//! (field number, JSON name, type, redaction) rather than printing the
//! typed structs, so that:
//!
//! * every field in the tables is shown, including those
//!   [`crate::proto`] leaves out;
//! * a field not in the tables (a newer SwarmKit's, or damage) is kept as
//!   `"unknown_<n>": {"wire_type": …, …}`: a varint's value is shown, the
//!   bytes of any other wire type only with `show_secrets` (as hex; else
//!   their length), since an unknown field may hold a secret. Nothing is
//!   dropped silently; a message cut short shows what decoded and a
//!   `"_malformed"` note. The walk never fails and never panics.
//! * redaction is one flag per field in the tables.
//!
//! # Redacted unless `show_secrets`
//!
//! Shown as `"<redacted: N bytes>"` (or as said):
//!
//! * `Secret.spec.data`; `Config.spec.data` too — configs are not secret in
//!   Swarm, but people put credentials in them, so they stay behind the
//!   same flag;
//! * container `env`: each `KEY=VALUE` as `KEY=<redacted>`;
//!   `pull_options.registry_auth`; in services' `spec` and `previous_spec`
//!   and in tasks' `spec` alike (they are one table);
//! * option values of log drivers, secret drivers and volume drivers (they
//!   take tokens and passwords) and of external CAs; `Any` payloads
//!   (opaque bytes);
//! * `root_ca.ca_key`, `root_ca.root_rotation.ca_key`,
//!   `spec.ca_config.signing_ca_key`, `unlock_keys[].key` (the KEK),
//!   `network_bootstrap_keys[].key`, the deprecated acceptance-policy
//!   secrets;
//! * join tokens: `SWMTKN-1-<digest>-<redacted>` (the digest is public, the
//!   SHA-256 of the root CA; the last part is the secret).
//!
//! # Formats
//!
//! Timestamps are RFC 3339 strings; durations `{"seconds": N, "text":
//! "720h (30d)"}`; enums their names (`"unknown (N)"` for a value this
//! reader does not know); PEM bytes, and secret and config data that are
//! UTF-8, as text; other bytes as base64; ids as strings. Objects are sorted by kind, then id; JSON keys are sorted.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::proto::wire;
use crate::store::{ObjectKind, Rebuilt, Store};

/// What the dump shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// Show secret values instead of `<redacted: N bytes>` (`--show-secrets`).
    pub show_secrets: bool,
}

/// The numbers a CLI prints about a rebuilt store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Objects per kind (plural names, every kind listed).
    pub counts: BTreeMap<&'static str, usize>,
    /// Raft members.
    pub members: usize,
    /// Index of the snapshot the store started from, if any.
    pub snapshot_index: Option<u64>,
    /// Index of the last entry applied (or the snapshot's).
    pub last_applied_index: u64,
    /// Normal entries applied after the snapshot (no-ops included).
    pub applied_entries: usize,
    /// Leader no-ops among them.
    pub noop_entries: usize,
    /// Entries SwarmKit would have refused (not applied).
    pub rejected_entries: usize,
    /// Store actions applied.
    pub actions: usize,
    /// Configuration changes applied.
    pub conf_changes: usize,
    /// Entries after the commit index.
    pub uncommitted_entries: usize,
    /// Whether those were applied.
    pub uncommitted_applied: bool,
    /// Notices of the rebuild.
    pub notices: Vec<String>,
}

/// The summary of a rebuild.
pub fn summary(rebuilt: &Rebuilt) -> Summary {
    let mut notices = rebuilt.notices.clone();
    if rebuilt.notices_dropped > 0 {
        notices.push(format!("… and {} more", rebuilt.notices_dropped));
    }
    Summary {
        counts: counts(&rebuilt.store),
        members: rebuilt.store.members().count(),
        snapshot_index: rebuilt.snapshot_index,
        last_applied_index: rebuilt.last_applied_index,
        applied_entries: rebuilt.applied_entries,
        noop_entries: rebuilt.noop_entries,
        rejected_entries: rebuilt.rejected_entries,
        actions: rebuilt.actions,
        conf_changes: rebuilt.conf_changes,
        uncommitted_entries: rebuilt.uncommitted_entries,
        uncommitted_applied: rebuilt.uncommitted_applied,
        notices,
    }
}

fn counts(store: &Store) -> BTreeMap<&'static str, usize> {
    ObjectKind::ALL
        .iter()
        .map(|k| (k.plural(), store.count(*k)))
        .collect()
}

/// The store as JSON: `secrets_shown`, `counts`, the raft `members` and
/// `removed_members`, and `objects` by kind (plural name) as arrays sorted
/// by id.
pub fn dump(store: &Store, opts: DumpOptions) -> Value {
    let mut objects = Map::new();
    for kind in ObjectKind::ALL {
        let list: Vec<Value> = store
            .objects_of(kind)
            .map(|(_, bytes)| dump_object(kind, bytes, opts))
            .collect();
        objects.insert(kind.plural().to_owned(), Value::Array(list));
    }
    let members: Vec<Value> = store
        .members()
        .map(|m| {
            json!({
                "raft_id": m.raft_id,
                "node_id": m.node_id,
                "addr": m.addr,
                "leader": m.status.as_ref().is_some_and(|s| s.leader),
                "reachability": enum_name(
                    REACHABILITY,
                    m.status.as_ref().map_or(0, |s| s.reachability)
                ),
            })
        })
        .collect();
    json!({
        "secrets_shown": opts.show_secrets,
        "counts": counts(store),
        "members": members,
        "removed_members": store.removed_members().collect::<Vec<_>>(),
        "objects": objects,
    })
}

/// [`dump`] with the rebuild's [`Summary`] under `"rebuild"`.
pub fn dump_rebuilt(rebuilt: &Rebuilt, opts: DumpOptions) -> Value {
    let mut v = dump(&rebuilt.store, opts);
    if let Value::Object(m) = &mut v {
        m.insert(
            "rebuild".to_owned(),
            serde_json::to_value(summary(rebuilt)).unwrap_or(Value::Null),
        );
    }
    v
}

/// One object's encoded bytes as JSON, by its kind's table.
pub fn dump_object(kind: ObjectKind, bytes: &[u8], opts: DumpOptions) -> Value {
    let msg = match kind {
        ObjectKind::Cluster => &CLUSTER,
        ObjectKind::Config => &CONFIG,
        ObjectKind::Extension => &EXTENSION,
        ObjectKind::Network => &NETWORK,
        ObjectKind::Node => &NODE,
        ObjectKind::Resource => &RESOURCE,
        ObjectKind::Secret => &SECRET,
        ObjectKind::Service => &SERVICE,
        ObjectKind::Task => &TASK,
    };
    render_msg(msg, bytes, opts.show_secrets)
}

// ---------------------------------------------------------------------------
// The walker

/// A field's type in a table.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bytes,
    /// Bytes that are PEM text (shown as text when they are).
    Pem,
    /// Bytes that are usually text (secret and config data): text when
    /// they are UTF-8, else `{"base64": …}`.
    Text,
    U64,
    I64,
    U32,
    I32,
    Bool,
    Float,
    Enum(&'static [(i32, &'static str)]),
    Msg(&'static Msg),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, Msg>`.
    MapMsg(&'static Msg),
    Timestamp,
    Duration,
}

impl Ty {
    fn wire_type(self) -> u8 {
        match self {
            Ty::U64 | Ty::I64 | Ty::U32 | Ty::I32 | Ty::Bool | Ty::Enum(_) => 0,
            Ty::Float => 5,
            _ => 2,
        }
    }
}

/// How a field's value is hidden without `show_secrets`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Redact {
    No,
    /// `<redacted: N bytes>`.
    Whole,
    /// `KEY=<redacted>`.
    EnvValue,
    /// `SWMTKN-1-<digest>-<redacted>`.
    JoinToken,
    /// A map's values.
    MapValues,
}

#[derive(Clone, Copy)]
struct Field {
    num: u32,
    name: &'static str,
    ty: Ty,
    rep: bool,
    redact: Redact,
}

impl Field {
    const fn rep(self) -> Field {
        Field { rep: true, ..self }
    }
    const fn redact(self, redact: Redact) -> Field {
        Field { redact, ..self }
    }
}

const fn f(num: u32, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        rep: false,
        redact: Redact::No,
    }
}

struct Msg {
    fields: &'static [Field],
}

impl Msg {
    fn field(&self, num: u32) -> Option<&Field> {
        self.fields.iter().find(|f| f.num == num)
    }
}

fn render_msg(msg: &Msg, bytes: &[u8], show: bool) -> Value {
    let mut out = Map::new();
    let mut groups: BTreeMap<u32, Vec<wire::Value<'_>>> = BTreeMap::new();
    for field in wire::Reader::new(bytes) {
        match field {
            Ok((n, v)) => groups.entry(n).or_default().push(v),
            Err(e) => {
                out.insert(
                    "_malformed".to_owned(),
                    Value::String(format!("{} at byte {}", e.what, e.offset)),
                );
                break;
            }
        }
    }
    for (n, values) in groups {
        let known = msg
            .field(n)
            .filter(|f| values.iter().all(|v| wire_ok(f, v)));
        match known {
            Some(field) => {
                out.insert(field.name.to_owned(), render_field(field, &values, show));
            }
            None => {
                let list: Vec<Value> = values.iter().map(|v| unknown(v, show)).collect();
                let v = if list.len() == 1 {
                    list.into_iter().next().unwrap_or(Value::Null)
                } else {
                    Value::Array(list)
                };
                out.insert(format!("unknown_{n}"), v);
            }
        }
    }
    Value::Object(out)
}

/// Whether a value's wire type fits the field (packed repeated scalars
/// come as bytes).
fn wire_ok(field: &Field, v: &wire::Value<'_>) -> bool {
    let want = field.ty.wire_type();
    v.wire_type() == want || (field.rep && want != 2 && v.wire_type() == 2)
}

fn unknown(v: &wire::Value<'_>, show: bool) -> Value {
    let mut m = Map::new();
    m.insert("wire_type".to_owned(), json!(v.wire_type()));
    match v {
        wire::Value::Varint(x) => {
            m.insert("varint".to_owned(), json!(x));
        }
        wire::Value::Fixed64(x) => hidden_bytes(&mut m, &x.to_le_bytes(), show),
        wire::Value::Fixed32(x) => hidden_bytes(&mut m, &x.to_le_bytes(), show),
        wire::Value::Bytes(b) => hidden_bytes(&mut m, b, show),
    }
    Value::Object(m)
}

fn hidden_bytes(m: &mut Map<String, Value>, b: &[u8], show: bool) {
    if show {
        m.insert("hex".to_owned(), Value::String(hex(b)));
    } else {
        m.insert("len".to_owned(), json!(b.len()));
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn render_field(field: &Field, values: &[wire::Value<'_>], show: bool) -> Value {
    match field.ty {
        Ty::MapStr | Ty::MapMsg(_) => return render_map(field, values, show),
        _ => {}
    }
    if field.rep {
        let mut list = Vec::new();
        for v in values {
            match (field.ty.wire_type(), v) {
                // A packed run of scalars.
                (0, wire::Value::Bytes(b)) => match wire::packed_varints(b) {
                    Ok(xs) => list.extend(xs.into_iter().map(|x| scalar(field, x, show))),
                    Err(e) => list.push(json!({ "_malformed": e.what })),
                },
                (5, wire::Value::Bytes(b)) => {
                    for c in b.chunks(4) {
                        let mut a = [0u8; 4];
                        a[..c.len()].copy_from_slice(c);
                        list.push(float(u32::from_le_bytes(a)));
                    }
                }
                _ => list.push(single(field, std::slice::from_ref(v), show)),
            }
        }
        Value::Array(list)
    } else {
        single(field, values, show)
    }
}

/// A singular field: the last value wins, except messages, whose
/// occurrences merge (as protobuf decodes them: their concatenation).
fn single(field: &Field, values: &[wire::Value<'_>], show: bool) -> Value {
    let Some(last) = values.last() else {
        return Value::Null;
    };
    match (field.ty, last) {
        (Ty::Msg(_) | Ty::Timestamp | Ty::Duration, _) => {
            let merged: Vec<u8> = values
                .iter()
                .filter_map(|v| match v {
                    wire::Value::Bytes(b) => Some(*b),
                    _ => None,
                })
                .flatten()
                .copied()
                .collect();
            match field.ty {
                Ty::Msg(m) => render_msg(m, &merged, show),
                Ty::Timestamp => timestamp(&merged, show),
                _ => duration(&merged, show),
            }
        }
        (_, wire::Value::Varint(x)) => scalar(field, *x, show),
        (_, wire::Value::Fixed32(x)) => float(*x),
        (_, wire::Value::Bytes(b)) => bytes_value(field, b, show),
        (_, v) => unknown(v, show),
    }
}

fn scalar(field: &Field, x: u64, _show: bool) -> Value {
    match field.ty {
        Ty::U64 => json!(x),
        Ty::I64 => json!(x as i64),
        Ty::U32 => json!(x as u32),
        Ty::I32 => json!(x as i64 as i32),
        Ty::Bool => json!(x != 0),
        Ty::Enum(names) => enum_name(names, x as i64 as i32),
        _ => json!(x),
    }
}

fn float(bits: u32) -> Value {
    let v = f32::from_bits(bits);
    serde_json::Number::from_f64(f64::from(v)).map_or_else(|| json!(v.to_string()), Value::Number)
}

fn enum_name(names: &[(i32, &str)], v: i32) -> Value {
    match names.iter().find(|(n, _)| *n == v) {
        Some((_, name)) => json!(name),
        None => json!(format!("unknown ({v})")),
    }
}

fn redacted(len: usize) -> Value {
    Value::String(format!("<redacted: {len} bytes>"))
}

fn bytes_value(field: &Field, b: &[u8], show: bool) -> Value {
    if !show {
        match field.redact {
            Redact::Whole => return redacted(b.len()),
            Redact::EnvValue => {
                let s = String::from_utf8_lossy(b);
                return match s.split_once('=') {
                    Some((k, _)) => json!(format!("{k}=<redacted>")),
                    None => json!(s),
                };
            }
            Redact::JoinToken => return join_token(b),
            Redact::No | Redact::MapValues => {}
        }
    }
    match field.ty {
        Ty::Bytes => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Ty::Pem => match std::str::from_utf8(b) {
            Ok(s) if s.is_empty() || s.trim_start().starts_with("-----BEGIN ") => json!(s),
            _ => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        },
        Ty::Text => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        },
        _ => json!(String::from_utf8_lossy(b)),
    }
}

/// `SWMTKN-1-<digest>-<secret>` (or `SWMTKN-2-1-<digest>-<secret>` in FIPS
/// mode) with the secret replaced; anything else of another shape whole, so
/// no part of a malformed token shows.
fn join_token(b: &[u8]) -> Value {
    if b.is_empty() {
        return json!("");
    }
    let s = String::from_utf8_lossy(b);
    let parts: Vec<&str> = s.split('-').collect();
    let digest = match parts.as_slice() {
        ["SWMTKN", "1", digest, _secret] => format!("SWMTKN-1-{digest}"),
        ["SWMTKN", "2", "1", digest, _secret] => format!("SWMTKN-2-1-{digest}"),
        _ => return redacted(b.len()),
    };
    json!(format!("{digest}-<redacted>"))
}

fn render_map(field: &Field, values: &[wire::Value<'_>], show: bool) -> Value {
    let mut out = Map::new();
    for v in values {
        let wire::Value::Bytes(entry) = v else {
            continue;
        };
        let mut key = String::new();
        let mut value: Option<&[u8]> = None;
        let mut bad = None;
        for kv in wire::Reader::new(entry) {
            match kv {
                Ok((1, wire::Value::Bytes(k))) => key = String::from_utf8_lossy(k).into_owned(),
                Ok((2, wire::Value::Bytes(x))) => value = Some(x),
                Ok(_) => {}
                Err(e) => bad = Some(e.what),
            }
        }
        let rendered = if let Some(what) = bad {
            json!({ "_malformed": what })
        } else {
            let x = value.unwrap_or_default();
            match field.ty {
                Ty::MapMsg(m) => render_msg(m, x, show),
                _ if !show && field.redact == Redact::MapValues => redacted(x.len()),
                _ => json!(String::from_utf8_lossy(x)),
            }
        };
        out.insert(key, rendered);
    }
    Value::Object(out)
}

/// `{1 seconds, 2 nanos}`.
fn seconds_nanos(b: &[u8]) -> Option<(i64, i32)> {
    let (mut s, mut n) = (0i64, 0i32);
    for field in wire::Reader::new(b) {
        match field.ok()? {
            (1, wire::Value::Varint(x)) => s = x as i64,
            (2, wire::Value::Varint(x)) => n = x as i64 as i32,
            _ => return None,
        }
    }
    Some((s, n))
}

fn timestamp(b: &[u8], show: bool) -> Value {
    let Some((s, n)) = seconds_nanos(b) else {
        return render_msg(&SECONDS_NANOS, b, show);
    };
    let t = time::OffsetDateTime::from_unix_timestamp(s)
        .ok()
        .filter(|_| (0..1_000_000_000).contains(&n))
        .and_then(|t| t.replace_nanosecond(n as u32).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    match t {
        Some(text) => json!(text),
        None => json!({ "seconds": s, "nanos": n }),
    }
}

fn duration(b: &[u8], show: bool) -> Value {
    let Some((s, n)) = seconds_nanos(b) else {
        return render_msg(&SECONDS_NANOS, b, show);
    };
    let mut m = Map::new();
    m.insert("seconds".to_owned(), json!(s));
    if n != 0 {
        m.insert("nanos".to_owned(), json!(n));
    }
    m.insert("text".to_owned(), json!(humane(s, n)));
    Value::Object(m)
}

/// `720h (30d)`, `1h30m`, `5s`, `1.5s`, `0s`.
pub(crate) fn humane(seconds: i64, nanos: i32) -> String {
    let neg = seconds < 0 || (seconds == 0 && nanos < 0);
    let s = seconds.unsigned_abs();
    let n = nanos.unsigned_abs();
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || n > 0 || (h == 0 && m == 0) {
        if n > 0 {
            let frac = format!("{n:09}");
            out.push_str(&format!("{sec}.{}s", frac.trim_end_matches('0')));
        } else {
            out.push_str(&format!("{sec}s"));
        }
    }
    if s >= 86_400 && s.is_multiple_of(86_400) && n == 0 {
        out.push_str(&format!(" ({}d)", s / 86_400));
    }
    out
}

// ---------------------------------------------------------------------------
// The tables (SwarmKit bump_20.10: api/objects.proto, specs.proto,
// types.proto)

use Redact::{EnvValue, JoinToken, MapValues, Whole};
use Ty::{
    Bool, Bytes, Duration, Enum, I32, I64, MapMsg, MapStr, Pem, Str, Text, Timestamp, U32, U64,
};

#[allow(non_upper_case_globals)]
const F32: Ty = Ty::Float;

const fn m(msg: &'static Msg) -> Ty {
    Ty::Msg(msg)
}

static SECONDS_NANOS: Msg = Msg {
    fields: &[f(1, "seconds", I64), f(2, "nanos", I32)],
};
static VERSION: Msg = Msg {
    fields: &[f(1, "index", U64)],
};
static META: Msg = Msg {
    fields: &[
        f(1, "version", m(&VERSION)),
        f(2, "created_at", Timestamp),
        f(3, "updated_at", Timestamp),
    ],
};
static INDEX_ENTRY: Msg = Msg {
    fields: &[f(1, "key", Str), f(2, "val", Str)],
};
static ANNOTATIONS: Msg = Msg {
    fields: &[
        f(1, "name", Str),
        f(2, "labels", MapStr),
        f(4, "indices", m(&INDEX_ENTRY)).rep(),
    ],
};
static DRIVER: Msg = Msg {
    fields: &[f(1, "name", Str), f(2, "options", MapStr)],
};
/// A driver whose options may hold credentials (log, secret, volume).
static DRIVER_SECRET_OPTIONS: Msg = Msg {
    fields: &[f(1, "name", Str), f(2, "options", MapStr).redact(MapValues)],
};
static ANY: Msg = Msg {
    fields: &[f(1, "type_url", Str), f(2, "value", Bytes).redact(Whole)],
};
static BOOL_VALUE: Msg = Msg {
    fields: &[f(1, "value", Bool)],
};
static INT64_VALUE: Msg = Msg {
    fields: &[f(1, "value", I64)],
};

const NODE_ROLE: &[(i32, &str)] = &[(0, "WORKER"), (1, "MANAGER")];
const REACHABILITY: &[(i32, &str)] = &[(0, "UNKNOWN"), (1, "UNREACHABLE"), (2, "REACHABLE")];
const TASK_STATE: &[(i32, &str)] = &[
    (0, "NEW"),
    (64, "PENDING"),
    (192, "ASSIGNED"),
    (256, "ACCEPTED"),
    (320, "PREPARING"),
    (384, "READY"),
    (448, "STARTING"),
    (512, "RUNNING"),
    (576, "COMPLETE"),
    (640, "SHUTDOWN"),
    (704, "FAILED"),
    (768, "REJECTED"),
    (800, "REMOVE"),
    (832, "ORPHANED"),
];

// Nodes

static NODE: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "spec", m(&NODE_SPEC)),
        f(4, "description", m(&NODE_DESCRIPTION)),
        f(5, "status", m(&NODE_STATUS)),
        f(6, "manager_status", m(&MANAGER_STATUS)),
        f(7, "attachment", m(&NETWORK_ATTACHMENT)),
        f(8, "certificate", m(&CERTIFICATE)),
        f(9, "role", Enum(NODE_ROLE)),
        f(10, "attachments", m(&NETWORK_ATTACHMENT)).rep(),
        f(11, "vxlan_udp_port", U32),
    ],
};
static NODE_SPEC: Msg = Msg {
    fields: &[
        f(1, "annotations", m(&ANNOTATIONS)),
        f(2, "desired_role", Enum(NODE_ROLE)),
        f(3, "membership", Enum(&[(0, "PENDING"), (1, "ACCEPTED")])),
        f(
            4,
            "availability",
            Enum(&[(0, "ACTIVE"), (1, "PAUSE"), (2, "DRAIN")]),
        ),
    ],
};
static NODE_DESCRIPTION: Msg = Msg {
    fields: &[
        f(1, "hostname", Str),
        f(2, "platform", m(&PLATFORM)),
        f(3, "resources", m(&RESOURCES)),
        f(4, "engine", m(&ENGINE)),
        f(5, "tls_info", m(&TLS_INFO)),
        f(6, "fips", Bool),
    ],
};
static PLATFORM: Msg = Msg {
    fields: &[f(1, "architecture", Str), f(2, "os", Str)],
};
static RESOURCES: Msg = Msg {
    fields: &[
        f(1, "nano_cpus", I64),
        f(2, "memory_bytes", I64),
        f(3, "generic", m(&GENERIC_RESOURCE)).rep(),
    ],
};
static GENERIC_RESOURCE: Msg = Msg {
    fields: &[
        f(1, "named_resource_spec", m(&NAMED_RESOURCE)),
        f(2, "discrete_resource_spec", m(&DISCRETE_RESOURCE)),
    ],
};
static NAMED_RESOURCE: Msg = Msg {
    fields: &[f(1, "kind", Str), f(2, "value", Str)],
};
static DISCRETE_RESOURCE: Msg = Msg {
    fields: &[f(1, "kind", Str), f(2, "value", I64)],
};
static ENGINE: Msg = Msg {
    fields: &[
        f(1, "engine_version", Str),
        f(2, "labels", MapStr),
        f(3, "plugins", m(&PLUGIN)).rep(),
    ],
};
static PLUGIN: Msg = Msg {
    fields: &[f(1, "type", Str), f(2, "name", Str)],
};
static TLS_INFO: Msg = Msg {
    fields: &[
        f(1, "trust_root", Pem),
        f(2, "cert_issuer_subject", Bytes),
        f(3, "cert_issuer_public_key", Bytes),
    ],
};
static NODE_STATUS: Msg = Msg {
    fields: &[
        f(
            1,
            "state",
            Enum(&[
                (0, "UNKNOWN"),
                (1, "DOWN"),
                (2, "READY"),
                (3, "DISCONNECTED"),
            ]),
        ),
        f(2, "message", Str),
        f(3, "addr", Str),
    ],
};
static MANAGER_STATUS: Msg = Msg {
    fields: &[
        f(1, "raft_id", U64),
        f(2, "addr", Str),
        f(3, "leader", Bool),
        f(4, "reachability", Enum(REACHABILITY)),
    ],
};
static CERTIFICATE: Msg = Msg {
    fields: &[
        f(1, "role", Enum(NODE_ROLE)),
        f(2, "csr", Pem),
        f(3, "status", m(&ISSUANCE_STATUS)),
        f(4, "certificate", Pem),
        f(5, "cn", Str),
    ],
};
static ISSUANCE_STATUS: Msg = Msg {
    fields: &[
        f(
            1,
            "state",
            Enum(&[
                (0, "UNKNOWN"),
                (1, "RENEW"),
                (2, "PENDING"),
                (3, "ISSUED"),
                (4, "FAILED"),
                (5, "ROTATE"),
            ]),
        ),
        f(2, "err", Str),
    ],
};
static NETWORK_ATTACHMENT: Msg = Msg {
    fields: &[
        f(1, "network", m(&NETWORK)),
        f(2, "addresses", Str).rep(),
        f(3, "aliases", Str).rep(),
        f(4, "driver_attachment_opts", MapStr),
    ],
};

// Services and tasks

static SERVICE: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "spec", m(&SERVICE_SPEC)),
        f(4, "endpoint", m(&ENDPOINT)),
        f(5, "update_status", m(&UPDATE_STATUS)),
        f(6, "previous_spec", m(&SERVICE_SPEC)),
        f(7, "pending_delete", Bool),
        f(10, "spec_version", m(&VERSION)),
        f(11, "previous_spec_version", m(&VERSION)),
        f(12, "job_status", m(&JOB_STATUS)),
    ],
};
static JOB_STATUS: Msg = Msg {
    fields: &[
        f(1, "job_iteration", m(&VERSION)),
        f(2, "last_execution", Timestamp),
    ],
};
static SERVICE_SPEC: Msg = Msg {
    fields: &[
        f(1, "annotations", m(&ANNOTATIONS)),
        f(2, "task", m(&TASK_SPEC)),
        f(3, "replicated", m(&REPLICATED)),
        f(4, "global", m(&EMPTY)),
        f(6, "update", m(&UPDATE_CONFIG)),
        f(7, "networks", m(&NETWORK_ATTACHMENT_CONFIG)).rep(),
        f(8, "endpoint", m(&ENDPOINT_SPEC)),
        f(9, "rollback", m(&UPDATE_CONFIG)),
        f(10, "replicated_job", m(&REPLICATED_JOB)),
        f(11, "global_job", m(&EMPTY)),
    ],
};
static EMPTY: Msg = Msg { fields: &[] };
static REPLICATED: Msg = Msg {
    fields: &[f(1, "replicas", U64)],
};
static REPLICATED_JOB: Msg = Msg {
    fields: &[f(1, "max_concurrent", U64), f(2, "total_completions", U64)],
};
static UPDATE_CONFIG: Msg = Msg {
    fields: &[
        f(1, "parallelism", U64),
        f(2, "delay", Duration),
        f(
            3,
            "failure_action",
            Enum(&[(0, "PAUSE"), (1, "CONTINUE"), (2, "ROLLBACK")]),
        ),
        f(4, "monitor", Duration),
        f(5, "max_failure_ratio", F32),
        f(6, "order", Enum(&[(0, "STOP_FIRST"), (1, "START_FIRST")])),
    ],
};
static ENDPOINT_SPEC: Msg = Msg {
    fields: &[
        f(1, "mode", Enum(&[(0, "VIP"), (1, "DNSRR")])),
        f(2, "ports", m(&PORT_CONFIG)).rep(),
    ],
};
static PORT_CONFIG: Msg = Msg {
    fields: &[
        f(1, "name", Str),
        f(2, "protocol", Enum(&[(0, "TCP"), (1, "UDP"), (2, "SCTP")])),
        f(3, "target_port", U32),
        f(4, "published_port", U32),
        f(5, "publish_mode", Enum(&[(0, "INGRESS"), (1, "HOST")])),
    ],
};
static ENDPOINT: Msg = Msg {
    fields: &[
        f(1, "spec", m(&ENDPOINT_SPEC)),
        f(2, "ports", m(&PORT_CONFIG)).rep(),
        f(3, "virtual_ips", m(&VIRTUAL_IP)).rep(),
    ],
};
static VIRTUAL_IP: Msg = Msg {
    fields: &[f(1, "network_id", Str), f(2, "addr", Str)],
};
static UPDATE_STATUS: Msg = Msg {
    fields: &[
        f(
            1,
            "state",
            Enum(&[
                (0, "UNKNOWN"),
                (1, "UPDATING"),
                (2, "PAUSED"),
                (3, "COMPLETED"),
                (4, "ROLLBACK_STARTED"),
                (5, "ROLLBACK_PAUSED"),
                (6, "ROLLBACK_COMPLETED"),
            ]),
        ),
        f(2, "started_at", Timestamp),
        f(3, "completed_at", Timestamp),
        f(4, "message", Str),
    ],
};
static TASK_SPEC: Msg = Msg {
    fields: &[
        f(1, "container", m(&CONTAINER_SPEC)),
        f(2, "resources", m(&RESOURCE_REQUIREMENTS)),
        f(4, "restart", m(&RESTART_POLICY)),
        f(5, "placement", m(&PLACEMENT)),
        f(6, "log_driver", m(&DRIVER_SECRET_OPTIONS)),
        f(7, "networks", m(&NETWORK_ATTACHMENT_CONFIG)).rep(),
        f(8, "attachment", m(&NETWORK_ATTACHMENT_SPEC)),
        f(9, "force_update", U64),
        f(10, "generic", m(&GENERIC_RUNTIME)),
        f(11, "resource_references", m(&RESOURCE_REFERENCE)).rep(),
    ],
};
static NETWORK_ATTACHMENT_SPEC: Msg = Msg {
    fields: &[f(1, "container_id", Str)],
};
static GENERIC_RUNTIME: Msg = Msg {
    fields: &[f(1, "kind", Str), f(2, "payload", m(&ANY))],
};
static RESOURCE_REFERENCE: Msg = Msg {
    fields: &[
        f(1, "resource_id", Str),
        f(
            2,
            "resource_type",
            Enum(&[(0, "TASK"), (1, "SECRET"), (2, "CONFIG")]),
        ),
    ],
};
static RESOURCE_REQUIREMENTS: Msg = Msg {
    fields: &[
        f(1, "limits", m(&RESOURCES)),
        f(2, "reservations", m(&RESOURCES)),
        f(3, "swap_bytes", m(&INT64_VALUE)),
        f(4, "memory_swappiness", m(&INT64_VALUE)),
    ],
};
static RESTART_POLICY: Msg = Msg {
    fields: &[
        f(
            1,
            "condition",
            Enum(&[(0, "NONE"), (1, "ON_FAILURE"), (2, "ANY")]),
        ),
        f(2, "delay", Duration),
        f(3, "max_attempts", U64),
        f(4, "window", Duration),
    ],
};
static PLACEMENT: Msg = Msg {
    fields: &[
        f(1, "constraints", Str).rep(),
        f(2, "preferences", m(&PLACEMENT_PREFERENCE)).rep(),
        f(3, "platforms", m(&PLATFORM)).rep(),
        f(4, "max_replicas", U64),
    ],
};
static PLACEMENT_PREFERENCE: Msg = Msg {
    fields: &[f(1, "spread", m(&SPREAD_OVER))],
};
static SPREAD_OVER: Msg = Msg {
    fields: &[f(1, "spread_descriptor", Str)],
};
static NETWORK_ATTACHMENT_CONFIG: Msg = Msg {
    fields: &[
        f(1, "target", Str),
        f(2, "aliases", Str).rep(),
        f(3, "addresses", Str).rep(),
        f(4, "driver_attachment_opts", MapStr),
    ],
};
static CONTAINER_SPEC: Msg = Msg {
    fields: &[
        f(1, "image", Str),
        f(2, "labels", MapStr),
        f(3, "command", Str).rep(),
        f(4, "args", Str).rep(),
        f(5, "env", Str).rep().redact(EnvValue),
        f(6, "dir", Str),
        f(7, "user", Str),
        f(8, "mounts", m(&MOUNT)).rep(),
        f(9, "stop_grace_period", Duration),
        f(10, "pull_options", m(&PULL_OPTIONS)),
        f(11, "groups", Str).rep(),
        f(12, "secrets", m(&SECRET_REFERENCE)).rep(),
        f(13, "tty", Bool),
        f(14, "hostname", Str),
        f(15, "dns_config", m(&DNS_CONFIG)),
        f(16, "healthcheck", m(&HEALTH_CONFIG)),
        f(17, "hosts", Str).rep(),
        f(18, "open_stdin", Bool),
        f(19, "read_only", Bool),
        f(20, "stop_signal", Str),
        f(21, "configs", m(&CONFIG_REFERENCE)).rep(),
        f(22, "privileges", m(&PRIVILEGES)),
        f(23, "init", m(&BOOL_VALUE)),
        f(
            24,
            "isolation",
            Enum(&[
                (0, "ISOLATION_DEFAULT"),
                (1, "ISOLATION_PROCESS"),
                (2, "ISOLATION_HYPERV"),
            ]),
        ),
        f(25, "pids_limit", I64),
        f(26, "sysctls", MapStr),
        f(27, "capability_add", Str).rep(),
        f(28, "capability_drop", Str).rep(),
        f(29, "ulimits", m(&ULIMIT)).rep(),
    ],
};
static PULL_OPTIONS: Msg = Msg {
    fields: &[f(64, "registry_auth", Str).redact(Whole)],
};
static MOUNT: Msg = Msg {
    fields: &[
        f(
            1,
            "type",
            Enum(&[(0, "BIND"), (1, "VOLUME"), (2, "TMPFS"), (3, "NPIPE")]),
        ),
        f(2, "source", Str),
        f(3, "target", Str),
        f(4, "readonly", Bool),
        f(5, "bind_options", m(&BIND_OPTIONS)),
        f(6, "volume_options", m(&VOLUME_OPTIONS)),
        f(7, "tmpfs_options", m(&TMPFS_OPTIONS)),
        f(
            8,
            "consistency",
            Enum(&[
                (0, "DEFAULT"),
                (1, "CONSISTENT"),
                (2, "CACHED"),
                (3, "DELEGATED"),
            ]),
        ),
    ],
};
static BIND_OPTIONS: Msg = Msg {
    fields: &[
        f(
            1,
            "propagation",
            Enum(&[
                (0, "RPRIVATE"),
                (1, "PRIVATE"),
                (2, "RSHARED"),
                (3, "SHARED"),
                (4, "RSLAVE"),
                (5, "SLAVE"),
            ]),
        ),
        f(2, "nonrecursive", Bool),
    ],
};
static VOLUME_OPTIONS: Msg = Msg {
    fields: &[
        f(1, "nocopy", Bool),
        f(2, "labels", MapStr),
        f(3, "driver_config", m(&DRIVER_SECRET_OPTIONS)),
    ],
};
static TMPFS_OPTIONS: Msg = Msg {
    fields: &[
        f(1, "size_bytes", I64),
        f(2, "mode", U32),
        f(3, "options", Str),
    ],
};
static SECRET_REFERENCE: Msg = Msg {
    fields: &[
        f(1, "secret_id", Str),
        f(2, "secret_name", Str),
        f(3, "file", m(&FILE_TARGET)),
    ],
};
static CONFIG_REFERENCE: Msg = Msg {
    fields: &[
        f(1, "config_id", Str),
        f(2, "config_name", Str),
        f(3, "file", m(&FILE_TARGET)),
        f(4, "runtime", m(&EMPTY)),
    ],
};
static FILE_TARGET: Msg = Msg {
    fields: &[
        f(1, "name", Str),
        f(2, "uid", Str),
        f(3, "gid", Str),
        f(4, "mode", U32),
    ],
};
static DNS_CONFIG: Msg = Msg {
    fields: &[
        f(1, "nameservers", Str).rep(),
        f(2, "search", Str).rep(),
        f(3, "options", Str).rep(),
    ],
};
static HEALTH_CONFIG: Msg = Msg {
    fields: &[
        f(1, "test", Str).rep(),
        f(2, "interval", Duration),
        f(3, "timeout", Duration),
        f(4, "retries", I32),
        f(5, "start_period", Duration),
    ],
};
static PRIVILEGES: Msg = Msg {
    fields: &[
        f(1, "credential_spec", m(&CREDENTIAL_SPEC)),
        f(2, "selinux_context", m(&SELINUX_CONTEXT)),
    ],
};
static CREDENTIAL_SPEC: Msg = Msg {
    fields: &[
        f(1, "file", Str),
        f(2, "registry", Str),
        f(3, "config", Str),
    ],
};
static SELINUX_CONTEXT: Msg = Msg {
    fields: &[
        f(1, "disable", Bool),
        f(2, "user", Str),
        f(3, "role", Str),
        f(4, "type", Str),
        f(5, "level", Str),
    ],
};
static ULIMIT: Msg = Msg {
    fields: &[f(1, "name", Str), f(2, "soft", I64), f(3, "hard", I64)],
};
static TASK: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "spec", m(&TASK_SPEC)),
        f(4, "service_id", Str),
        f(5, "slot", U64),
        f(6, "node_id", Str),
        f(7, "annotations", m(&ANNOTATIONS)),
        f(8, "service_annotations", m(&ANNOTATIONS)),
        f(9, "status", m(&TASK_STATUS)),
        f(10, "desired_state", Enum(TASK_STATE)),
        f(11, "networks", m(&NETWORK_ATTACHMENT)).rep(),
        f(12, "endpoint", m(&ENDPOINT)),
        f(13, "log_driver", m(&DRIVER_SECRET_OPTIONS)),
        f(14, "spec_version", m(&VERSION)),
        f(15, "assigned_generic_resources", m(&GENERIC_RESOURCE)).rep(),
        f(16, "job_iteration", m(&VERSION)),
    ],
};
static TASK_STATUS: Msg = Msg {
    fields: &[
        f(1, "timestamp", Timestamp),
        f(2, "state", Enum(TASK_STATE)),
        f(3, "message", Str),
        f(4, "err", Str),
        f(5, "container", m(&CONTAINER_STATUS)),
        f(6, "port_status", m(&PORT_STATUS)),
        f(7, "applied_by", Str),
        f(8, "applied_at", Timestamp),
    ],
};
static CONTAINER_STATUS: Msg = Msg {
    fields: &[
        f(1, "container_id", Str),
        f(2, "pid", I32),
        f(3, "exit_code", I32),
    ],
};
static PORT_STATUS: Msg = Msg {
    fields: &[f(1, "ports", m(&PORT_CONFIG)).rep()],
};

// Networks, secrets, configs, resources, extensions

static NETWORK: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "spec", m(&NETWORK_SPEC)),
        f(4, "driver_state", m(&DRIVER)),
        f(5, "ipam", m(&IPAM_OPTIONS)),
        f(6, "pending_delete", Bool),
    ],
};
static NETWORK_SPEC: Msg = Msg {
    fields: &[
        f(1, "annotations", m(&ANNOTATIONS)),
        f(2, "driver_config", m(&DRIVER)),
        f(3, "ipv6_enabled", Bool),
        f(4, "internal", Bool),
        f(5, "ipam", m(&IPAM_OPTIONS)),
        f(6, "attachable", Bool),
        f(7, "ingress", Bool),
        f(8, "network", Str),
    ],
};
static IPAM_OPTIONS: Msg = Msg {
    fields: &[
        f(1, "driver", m(&DRIVER)),
        f(3, "configs", m(&IPAM_CONFIG)).rep(),
    ],
};
static IPAM_CONFIG: Msg = Msg {
    fields: &[
        f(
            1,
            "family",
            Enum(&[(0, "UNKNOWN"), (4, "IPV4"), (6, "IPV6")]),
        ),
        f(2, "subnet", Str),
        f(3, "range", Str),
        f(4, "gateway", Str),
        f(5, "reserved", MapStr),
    ],
};
static SECRET: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "spec", m(&SECRET_SPEC)),
        f(4, "internal", Bool),
    ],
};
static SECRET_SPEC: Msg = Msg {
    fields: &[
        f(1, "annotations", m(&ANNOTATIONS)),
        f(2, "data", Text).redact(Whole),
        f(3, "templating", m(&DRIVER)),
        f(4, "driver", m(&DRIVER_SECRET_OPTIONS)),
    ],
};
static CONFIG: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "spec", m(&CONFIG_SPEC)),
    ],
};
static CONFIG_SPEC: Msg = Msg {
    fields: &[
        f(1, "annotations", m(&ANNOTATIONS)),
        // Not secret in Swarm, but behind --show-secrets all the same.
        f(2, "data", Text).redact(Whole),
        f(3, "templating", m(&DRIVER)),
    ],
};
static RESOURCE: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "annotations", m(&ANNOTATIONS)),
        f(4, "kind", Str),
        f(5, "payload", m(&ANY)),
    ],
};
static EXTENSION: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "annotations", m(&ANNOTATIONS)),
        f(4, "description", Str),
    ],
};

// The cluster

static CLUSTER: Msg = Msg {
    fields: &[
        f(1, "id", Str),
        f(2, "meta", m(&META)),
        f(3, "spec", m(&CLUSTER_SPEC)),
        f(4, "root_ca", m(&ROOT_CA)),
        f(5, "network_bootstrap_keys", m(&ENCRYPTION_KEY)).rep(),
        f(6, "encryption_key_lamport_clock", U64),
        f(8, "blacklisted_certificates", MapMsg(&BLACKLISTED)),
        f(9, "unlock_keys", m(&ENCRYPTION_KEY)).rep(),
        f(10, "fips", Bool),
        f(11, "default_address_pool", Str).rep(),
        f(12, "subnet_size", U32),
        f(13, "vxlan_udp_port", U32),
    ],
};
static BLACKLISTED: Msg = Msg {
    fields: &[f(1, "expiry", Timestamp)],
};
static ENCRYPTION_KEY: Msg = Msg {
    fields: &[
        f(1, "subsystem", Str),
        f(2, "algorithm", Enum(&[(0, "AES_128_GCM")])),
        f(3, "key", Bytes).redact(Whole),
        f(4, "lamport_time", U64),
    ],
};
static CLUSTER_SPEC: Msg = Msg {
    fields: &[
        f(1, "annotations", m(&ANNOTATIONS)),
        f(2, "acceptance_policy", m(&ACCEPTANCE_POLICY)),
        f(3, "orchestration", m(&ORCHESTRATION)),
        f(4, "raft", m(&RAFT_CONFIG)),
        f(5, "dispatcher", m(&DISPATCHER)),
        f(6, "ca_config", m(&CA_CONFIG)),
        f(7, "task_defaults", m(&TASK_DEFAULTS)),
        f(8, "encryption_config", m(&ENCRYPTION_CONFIG)),
    ],
};
static ACCEPTANCE_POLICY: Msg = Msg {
    fields: &[f(1, "policies", m(&ROLE_ADMISSION)).rep()],
};
static ROLE_ADMISSION: Msg = Msg {
    fields: &[
        f(1, "role", Enum(NODE_ROLE)),
        f(2, "autoaccept", Bool),
        f(3, "secret", m(&ADMISSION_SECRET)),
    ],
};
static ADMISSION_SECRET: Msg = Msg {
    fields: &[f(1, "data", Bytes).redact(Whole), f(2, "alg", Str)],
};
static ORCHESTRATION: Msg = Msg {
    fields: &[f(1, "task_history_retention_limit", I64)],
};
static RAFT_CONFIG: Msg = Msg {
    fields: &[
        f(1, "snapshot_interval", U64),
        f(2, "keep_old_snapshots", U64),
        f(3, "log_entries_for_slow_followers", U64),
        f(4, "heartbeat_tick", U32),
        f(5, "election_tick", U32),
    ],
};
static DISPATCHER: Msg = Msg {
    fields: &[f(1, "heartbeat_period", Duration)],
};
static TASK_DEFAULTS: Msg = Msg {
    fields: &[f(1, "log_driver", m(&DRIVER_SECRET_OPTIONS))],
};
static ENCRYPTION_CONFIG: Msg = Msg {
    fields: &[f(1, "auto_lock_managers", Bool)],
};
static CA_CONFIG: Msg = Msg {
    fields: &[
        f(1, "node_cert_expiry", Duration),
        f(2, "external_cas", m(&EXTERNAL_CA)).rep(),
        f(3, "signing_ca_cert", Pem),
        f(4, "signing_ca_key", Pem).redact(Whole),
        f(5, "force_rotate", U64),
    ],
};
static EXTERNAL_CA: Msg = Msg {
    fields: &[
        f(1, "protocol", Enum(&[(0, "CFSSL")])),
        f(2, "url", Str),
        f(3, "options", MapStr).redact(MapValues),
        f(4, "ca_cert", Pem),
    ],
};
static ROOT_CA: Msg = Msg {
    fields: &[
        f(1, "ca_key", Pem).redact(Whole),
        f(2, "ca_cert", Pem),
        f(3, "ca_cert_hash", Str),
        f(4, "join_tokens", m(&JOIN_TOKENS)),
        f(5, "root_rotation", m(&ROOT_ROTATION)),
        f(6, "last_forced_rotation", U64),
    ],
};
static JOIN_TOKENS: Msg = Msg {
    fields: &[
        f(1, "worker", Str).redact(JoinToken),
        f(2, "manager", Str).redact(JoinToken),
    ],
};
static ROOT_ROTATION: Msg = Msg {
    fields: &[
        f(1, "ca_cert", Pem),
        f(2, "ca_key", Pem).redact(Whole),
        f(3, "cross_signed_ca_cert", Pem),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message;

    fn show(b: bool) -> DumpOptions {
        DumpOptions { show_secrets: b }
    }

    #[test]
    fn humane_durations() {
        assert_eq!(humane(2_592_000, 0), "720h (30d)");
        assert_eq!(humane(7_776_000, 0), "2160h (90d)");
        assert_eq!(humane(5400, 0), "1h30m");
        assert_eq!(humane(5, 0), "5s");
        assert_eq!(humane(1, 500_000_000), "1.5s");
        assert_eq!(humane(0, 0), "0s");
        assert_eq!(humane(-5, 0), "-5s");
        assert!(!humane(i64::MIN, i32::MIN).is_empty());
    }

    #[test]
    fn join_tokens_keep_their_digest() {
        assert_eq!(
            join_token(b"SWMTKN-1-4r4xq4cmbyz6m7-4nfhn0y26484uq485te08zy8w"),
            json!("SWMTKN-1-4r4xq4cmbyz6m7-<redacted>")
        );
        assert_eq!(
            join_token(b"SWMTKN-2-1-abc-def"),
            json!("SWMTKN-2-1-abc-<redacted>")
        );
        assert_eq!(join_token(b"SWMTKN-1-x"), json!("<redacted: 10 bytes>"));
        assert_eq!(
            join_token(b"SWMTKN-1-abc-def-ghi"),
            json!("<redacted: 20 bytes>")
        );
        assert_eq!(join_token(b"garbage"), json!("<redacted: 7 bytes>"));
    }

    #[test]
    fn secret_data_and_unknown_fields() {
        let mut spec = proto::SecretSpec::default();
        spec.data = b"hunter2".to_vec();
        let s = proto::Secret {
            id: "abc".into(),
            spec: Some(spec),
            ..Default::default()
        };
        let mut b = s.encode_to_vec();
        // An unknown field 99 holding bytes, and one varint field 98.
        b.extend_from_slice(&[0x9a, 0x06, 0x03, b'x', b'y', b'z', 0x90, 0x06, 0x2a]);
        let hidden = dump_object(ObjectKind::Secret, &b, show(false));
        let text = hidden.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
            "{text}"
        );
        assert_eq!(hidden["spec"]["data"], json!("<redacted: 7 bytes>"));
        assert_eq!(hidden["unknown_99"], json!({"wire_type": 2, "len": 3}));
        assert_eq!(hidden["unknown_98"], json!({"wire_type": 0, "varint": 42}));
        let shown = dump_object(ObjectKind::Secret, &b, show(true));
        assert_eq!(shown["spec"]["data"], json!("hunter2"));
        assert_eq!(
            shown["unknown_99"],
            json!({"wire_type": 2, "hex": "78797a"})
        );
        assert_eq!(shown["id"], json!("abc"));
    }

    #[test]
    fn malformed_bytes_show_what_decoded() {
        let v = dump_object(
            ObjectKind::Node,
            &[0x0a, 0x01, b'n', 0x12, 0x09],
            show(false),
        );
        assert_eq!(v["id"], json!("n"));
        assert!(v["_malformed"].is_string());
        // The wrong wire type for a known field: kept as unknown.
        let v = dump_object(ObjectKind::Node, &[0x08, 0x01], show(false));
        assert_eq!(v["unknown_1"], json!({"wire_type": 0, "varint": 1}));
    }

    #[test]
    fn env_and_registry_auth() {
        let mut c = proto::ContainerSpec::default();
        c.image = "nginx".into();
        c.env = vec!["PASSWORD=topsecret".into(), "BARE".into()];
        let mut pull = proto::PullOptions::default();
        pull.registry_auth = "eyJ1c2VybmFtZSI6".into();
        c.pull_options = Some(pull);
        let spec = proto::ServiceSpec {
            task: Some(proto::TaskSpec {
                runtime: Some(proto::TaskRuntime::Container(c)),
                force_update: 0,
            }),
            ..Default::default()
        };
        let svc = proto::Service {
            id: "svc".into(),
            spec: Some(spec.clone()),
            previous_spec: Some(spec),
            ..Default::default()
        };
        let b = svc.encode_to_vec();
        let v = dump_object(ObjectKind::Service, &b, show(false));
        let text = v.to_string();
        assert!(!text.contains("topsecret") && !text.contains("eyJ1c2VybmFtZSI6"));
        for spec in ["spec", "previous_spec"] {
            let c = &v[spec]["task"]["container"];
            assert_eq!(c["env"], json!(["PASSWORD=<redacted>", "BARE"]));
            assert_eq!(c["image"], json!("nginx"));
            assert_eq!(
                c["pull_options"]["registry_auth"],
                json!("<redacted: 16 bytes>")
            );
        }
        let v = dump_object(ObjectKind::Service, &b, show(true));
        assert_eq!(
            v["spec"]["task"]["container"]["env"][0],
            json!("PASSWORD=topsecret")
        );
    }

    #[test]
    fn times_and_enums() {
        let n = proto::Node {
            id: "n".into(),
            meta: Some(proto::Meta {
                version: Some(proto::Version { index: 3 }),
                created_at: Some(proto::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                }),
                updated_at: Some(proto::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
            }),
            role: 1,
            status: Some(proto::NodeStatus {
                state: 9,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = dump_object(ObjectKind::Node, &n.encode_to_vec(), show(false));
        assert_eq!(
            v["meta"]["created_at"],
            json!("2023-11-14T22:13:20.000000005Z")
        );
        assert_eq!(
            v["meta"]["updated_at"],
            json!({"seconds": i64::MAX, "nanos": 0})
        );
        assert_eq!(v["meta"]["version"]["index"], json!(3));
        assert_eq!(v["role"], json!("MANAGER"));
        assert_eq!(v["status"]["state"], json!("unknown (9)"));
    }
}
