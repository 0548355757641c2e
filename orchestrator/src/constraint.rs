//! Placement constraints as Docker writes them (`node.labels.zone==a`) and
//! placement preferences (`spread=node.labels.zone`).

use std::fmt;

use crate::model::{Constraint, ConstraintKey, ConstraintOp};
use crate::nodes::{NodeRole, NodeView};

/// The longest constraint or preference text accepted (bytes).
pub const MAX_CONSTRAINT_LEN: usize = 4096;
/// The longest label key in a constraint or preference (bytes).
pub const MAX_LABEL_KEY_LEN: usize = 256;

const LABELS_PREFIX: &str = "node.labels.";
const KEYS_HELP: &str = "use node.id, node.hostname, node.role or node.labels.KEY";

/// Checks a label key named in a constraint or a preference: not empty, at
/// most [`MAX_LABEL_KEY_LEN`] bytes, no whitespace, control characters, `=`
/// or `!` (so the text form reads back unambiguously).
fn check_label_key(key: &str, whole: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!(
            "constraint {whole:?} names no label: write node.labels.KEY"
        ));
    }
    if key.len() > MAX_LABEL_KEY_LEN {
        return Err(format!(
            "label key in {:?} is {} bytes long; at most {MAX_LABEL_KEY_LEN} are allowed",
            shorten(whole),
            key.len()
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '=' || *c == '!')
    {
        return Err(format!(
            "label key {key:?} may not contain {c:?}: use letters, digits, '.', '-', '_' or '/'"
        ));
    }
    Ok(())
}

/// The first 64 characters of a long text, for error messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Parses one `--constraint`, in Docker's syntax: `node.labels.KEY==VALUE`,
/// `node.labels.KEY!=VALUE`, `node.role==manager|worker`,
/// `node.hostname==H`, `node.id==ID`. Whitespace around the key, the
/// operator and the value is ignored.
pub fn parse_constraint(text: &str) -> Result<Constraint, String> {
    if text.len() > MAX_CONSTRAINT_LEN {
        return Err(format!(
            "constraint {:?} is {} bytes long; at most {MAX_CONSTRAINT_LEN} are allowed",
            shorten(text),
            text.len()
        ));
    }
    let whole = text.trim();
    if whole.is_empty() {
        return Err(
            "empty constraint: write KEY==VALUE or KEY!=VALUE, e.g. node.labels.zone==a".into(),
        );
    }
    if whole.contains('\0') {
        return Err(format!("constraint {whole:?} contains a NUL byte"));
    }
    let eq = whole.find("==");
    let ne = whole.find("!=");
    let (at, op) = match (eq, ne) {
        (Some(e), Some(n)) if n < e => (n, ConstraintOp::Ne),
        (Some(e), _) => (e, ConstraintOp::Eq),
        (None, Some(n)) => (n, ConstraintOp::Ne),
        (None, None) => {
            return Err(format!(
                "constraint {whole:?} has no == or !=: write KEY==VALUE or KEY!=VALUE"
            ));
        }
    };
    let key_text = whole[..at].trim();
    let value = whole[at + 2..].trim();
    if key_text.is_empty() {
        return Err(format!(
            "constraint {whole:?} has no key before the operator: {KEYS_HELP}"
        ));
    }
    if value.is_empty() {
        return Err(format!(
            "constraint {whole:?} has no value after the operator"
        ));
    }
    if value.contains("==") || value.contains("!=") {
        return Err(format!(
            "constraint {whole:?} has more than one operator: write one KEY==VALUE per constraint"
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the value in constraint {whole:?} contains the control character {c:?}"
        ));
    }
    let key = match key_text {
        "node.id" => ConstraintKey::NodeId,
        "node.hostname" => ConstraintKey::Hostname,
        "node.role" => {
            if value != "manager" && value != "worker" {
                return Err(format!(
                    "node.role must be manager or worker, not {value:?}"
                ));
            }
            ConstraintKey::Role
        }
        other => match other.strip_prefix(LABELS_PREFIX) {
            Some(label) => {
                check_label_key(label, whole)?;
                ConstraintKey::Label(label.to_string())
            }
            None if other == "node.labels" => {
                return Err(format!(
                    "constraint {whole:?} names no label: write node.labels.KEY"
                ));
            }
            None => {
                return Err(format!("unknown constraint key {other:?}: {KEYS_HELP}"));
            }
        },
    };
    Ok(Constraint {
        key,
        op,
        value: value.to_string(),
    })
}

/// Parses one `--placement-pref`: `spread=node.labels.KEY`, giving `KEY`.
pub fn parse_spread(text: &str) -> Result<String, String> {
    if text.len() > MAX_CONSTRAINT_LEN {
        return Err(format!(
            "placement preference {:?} is {} bytes long; at most {MAX_CONSTRAINT_LEN} are allowed",
            shorten(text),
            text.len()
        ));
    }
    let whole = text.trim();
    let Some((strategy, target)) = whole.split_once('=') else {
        return Err(format!(
            "placement preference {whole:?} is not understood: write spread=node.labels.KEY"
        ));
    };
    if strategy.trim() != "spread" {
        return Err(format!(
            "placement preference {:?} is not supported: only spread=node.labels.KEY is",
            strategy.trim()
        ));
    }
    let target = target.trim();
    let Some(key) = target.strip_prefix(LABELS_PREFIX) else {
        return Err(format!(
            "cannot spread over {target:?}: write spread=node.labels.KEY"
        ));
    };
    check_label_key(key, whole)?;
    Ok(key.to_string())
}

impl Constraint {
    /// Whether `node` meets the constraint. As in Docker, a node without
    /// the label meets `node.labels.KEY!=V` and does not meet
    /// `node.labels.KEY==V`.
    pub fn matches(&self, node: &NodeView) -> bool {
        let actual: Option<&str> = match &self.key {
            ConstraintKey::NodeId => Some(node.id.as_str()),
            ConstraintKey::Hostname => Some(node.hostname.as_str()),
            ConstraintKey::Role => Some(match node.role {
                NodeRole::Manager => "manager",
                NodeRole::Worker => "worker",
            }),
            ConstraintKey::Label(key) => node.labels.get(key).map(String::as_str),
        };
        match self.op {
            ConstraintOp::Eq => actual == Some(self.value.as_str()),
            ConstraintOp::Ne => actual != Some(self.value.as_str()),
        }
    }
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::Hostname => f.write_str("node.hostname"),
            ConstraintKey::Role => f.write_str("node.role"),
            ConstraintKey::Label(key) => write!(f, "{LABELS_PREFIX}{key}"),
        }
    }
}

impl fmt::Display for ConstraintOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConstraintOp::Eq => "==",
            ConstraintOp::Ne => "!=",
        })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op, self.value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::nodes::NodeAvailability;

    fn node(labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            id: "n1".into(),
            hostname: "h1".into(),
            role: NodeRole::Worker,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            availability: NodeAvailability::Active,
            ready: true,
        }
    }

    #[test]
    fn parses_docker_syntax() {
        let c = parse_constraint("node.labels.zone==a").unwrap();
        assert_eq!(c.key, ConstraintKey::Label("zone".into()));
        assert_eq!(c.op, ConstraintOp::Eq);
        assert_eq!(c.value, "a");
        let c = parse_constraint("  node.role != manager ").unwrap();
        assert_eq!(c.key, ConstraintKey::Role);
        assert_eq!(c.op, ConstraintOp::Ne);
        assert_eq!(c.value, "manager");
        assert_eq!(
            parse_constraint("node.hostname==web-1").unwrap().key,
            ConstraintKey::Hostname
        );
        assert_eq!(
            parse_constraint("node.id==ABC").unwrap().key,
            ConstraintKey::NodeId
        );
    }

    #[test]
    fn refuses_bad_constraints_with_a_reason() {
        assert_eq!(
            parse_constraint("node.zone==a").unwrap_err(),
            "unknown constraint key \"node.zone\": use node.id, node.hostname, node.role or node.labels.KEY"
        );
        assert_eq!(
            parse_constraint("node.labels.zone").unwrap_err(),
            "constraint \"node.labels.zone\" has no == or !=: write KEY==VALUE or KEY!=VALUE"
        );
        assert_eq!(
            parse_constraint("node.role==boss").unwrap_err(),
            "node.role must be manager or worker, not \"boss\""
        );
        assert!(
            parse_constraint("node.labels.zone==")
                .unwrap_err()
                .contains("has no value")
        );
        assert!(parse_constraint("==a").unwrap_err().contains("has no key"));
        assert!(
            parse_constraint("node.labels.==a")
                .unwrap_err()
                .contains("names no label")
        );
        assert!(parse_constraint("").unwrap_err().contains("empty"));
        assert!(
            parse_constraint("node.labels.a==b==c")
                .unwrap_err()
                .contains("more than one operator")
        );
        assert!(parse_constraint(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "node.labels.zone==a",
            "node.labels.zone!=a b",
            "node.role==worker",
            "node.hostname!=h",
            "node.id==X",
        ] {
            let c = parse_constraint(text).unwrap();
            assert_eq!(c.to_string(), text);
            assert_eq!(parse_constraint(&c.to_string()).unwrap(), c);
        }
    }

    #[test]
    fn matching_follows_docker() {
        let with = node(&[("zone", "a")]);
        let without = node(&[]);
        let eq = parse_constraint("node.labels.zone==a").unwrap();
        let ne = parse_constraint("node.labels.zone!=a").unwrap();
        assert!(eq.matches(&with));
        assert!(!eq.matches(&without));
        assert!(!ne.matches(&with));
        assert!(ne.matches(&without));
        assert!(
            parse_constraint("node.role==worker")
                .unwrap()
                .matches(&with)
        );
        assert!(
            !parse_constraint("node.role==manager")
                .unwrap()
                .matches(&with)
        );
        assert!(
            parse_constraint("node.hostname==h1")
                .unwrap()
                .matches(&with)
        );
        assert!(!parse_constraint("node.id!=n1").unwrap().matches(&with));
    }

    #[test]
    fn spread_preference() {
        assert_eq!(parse_spread("spread=node.labels.zone").unwrap(), "zone");
        assert!(
            parse_spread("spread=node.zone")
                .unwrap_err()
                .contains("cannot spread")
        );
        assert!(
            parse_spread("pack=node.labels.zone")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(parse_spread("spread").is_err());
        assert!(parse_spread("spread=node.labels.").is_err());
    }
}
