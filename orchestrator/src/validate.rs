//! Bounds on what a [`ServiceSpec`] may hold, checked before it enters the
//! replicated state.

use crate::constraint::{MAX_LABEL_KEY_LEN, parse_constraint};
use crate::model::{Mode, ServiceSpec};

/// The longest service name (Docker's limit).
pub const MAX_SERVICE_NAME_LEN: usize = 63;
/// The most replicas a replicated service may ask for.
pub const MAX_REPLICAS: u64 = 100_000;
/// The largest `update.parallelism`.
pub const MAX_PARALLELISM: u64 = MAX_REPLICAS;
/// The longest restart delay, update delay and update monitor: 24 hours
/// (milliseconds).
pub const MAX_DELAY_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest stop grace period: 1 hour (milliseconds).
pub const MAX_STOP_GRACE_MS: u64 = 60 * 60 * 1000;
/// The most restarts `restart.max_attempts` may allow.
pub const MAX_RESTART_ATTEMPTS: u64 = 1_000_000;
/// The most placement constraints.
pub const MAX_CONSTRAINTS: usize = 64;
/// The most placement preferences (`spread_over` keys).
pub const MAX_SPREAD_KEYS: usize = 8;
/// The most environment variables.
pub const MAX_ENV: usize = 256;
/// The most arguments.
pub const MAX_ARGS: usize = 256;
/// The most service labels.
pub const MAX_SERVICE_LABELS: usize = 64;
/// The longest single entry: an argument, an environment variable (name
/// and value together), a label (key and value together), the image
/// (bytes).
pub const MAX_ENTRY_BYTES: usize = 4096;

fn check_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!(
            "{what} is {} bytes long; at most {max} are allowed",
            text.len()
        ));
    }
    if text.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}

/// Whether `name` is a valid service name: 1 to 63 characters, a letter or
/// a digit first, then letters, digits, `_`, `.` or `-`.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a service needs a name".into());
    }
    if name.len() > MAX_SERVICE_NAME_LEN {
        return Err(format!(
            "service name {:?}… is {} characters long; at most {MAX_SERVICE_NAME_LEN} are allowed",
            name.chars().take(20).collect::<String>(),
            name.len()
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return Err(format!(
            "invalid service name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

impl ServiceSpec {
    /// Checks the spec against the bounds above (the `MAX_*` constants of
    /// this crate): the name, a non-empty image or program, no NUL byte in
    /// arguments or the environment, environment names non-empty without
    /// `=`, replicas, delays and counts bounded, constraints that read back
    /// as they are written.
    pub fn validate(&self) -> Result<(), String> {
        validate_service_name(&self.name)?;
        let t = &self.task;
        if t.image.trim().is_empty() {
            return Err("a service needs an image or a program".into());
        }
        check_text("the image", &t.image, MAX_ENTRY_BYTES)?;
        if t.args.len() > MAX_ARGS {
            return Err(format!(
                "{} arguments given; at most {MAX_ARGS} are allowed",
                t.args.len()
            ));
        }
        for (i, arg) in t.args.iter().enumerate() {
            check_text(&format!("argument {}", i + 1), arg, MAX_ENTRY_BYTES)?;
        }
        if t.env.len() > MAX_ENV {
            return Err(format!(
                "{} environment variables given; at most {MAX_ENV} are allowed",
                t.env.len()
            ));
        }
        for (k, v) in &t.env {
            if k.is_empty() {
                return Err("an environment variable has an empty name".into());
            }
            if k.contains('=') {
                return Err(format!(
                    "environment variable name {k:?} contains '=': write NAME=VALUE"
                ));
            }
            check_text(
                &format!("environment variable {k:?}"),
                &format!("{k}={v}"),
                MAX_ENTRY_BYTES,
            )?;
        }
        crate::secret::validate_refs(&t.secrets)?;
        if t.stop_grace_ms > MAX_STOP_GRACE_MS {
            return Err(format!(
                "stop grace period of {} ms is too long; at most {MAX_STOP_GRACE_MS} ms (1 hour) is allowed",
                t.stop_grace_ms
            ));
        }
        if let Mode::Replicated { replicas } = self.mode
            && replicas > MAX_REPLICAS
        {
            return Err(format!(
                "{replicas} replicas asked for; at most {MAX_REPLICAS} are allowed"
            ));
        }
        if self.labels.len() > MAX_SERVICE_LABELS {
            return Err(format!(
                "{} labels given; at most {MAX_SERVICE_LABELS} are allowed",
                self.labels.len()
            ));
        }
        for (k, v) in &self.labels {
            if k.trim().is_empty() {
                return Err("a service label has an empty key".into());
            }
            check_text(
                &format!("label {k:?}"),
                &format!("{k}={v}"),
                MAX_ENTRY_BYTES,
            )?;
        }
        if self.constraints.len() > MAX_CONSTRAINTS {
            return Err(format!(
                "{} constraints given; at most {MAX_CONSTRAINTS} are allowed",
                self.constraints.len()
            ));
        }
        for c in &self.constraints {
            let text = c.to_string();
            check_text(&format!("constraint {text:?}"), &text, MAX_ENTRY_BYTES)?;
            match parse_constraint(&text) {
                Ok(back) if &back == c => {}
                Ok(_) => {
                    return Err(format!("constraint {text:?} does not read back as written"));
                }
                Err(e) => return Err(e),
            }
        }
        if self.spread_over.len() > MAX_SPREAD_KEYS {
            return Err(format!(
                "{} placement preferences given; at most {MAX_SPREAD_KEYS} are allowed",
                self.spread_over.len()
            ));
        }
        for key in &self.spread_over {
            if key.is_empty()
                || key.len() > MAX_LABEL_KEY_LEN
                || key
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '!')
            {
                return Err(format!(
                    "cannot spread over label key {key:?}: use a key of 1 to {MAX_LABEL_KEY_LEN} bytes without spaces, '=' or '!'"
                ));
            }
        }
        if self.restart.delay_ms > MAX_DELAY_MS {
            return Err(format!(
                "restart delay of {} ms is too long; at most {MAX_DELAY_MS} ms (24 hours) is allowed",
                self.restart.delay_ms
            ));
        }
        if let Some(max) = self.restart.max_attempts
            && max > MAX_RESTART_ATTEMPTS
        {
            return Err(format!(
                "restart max attempts of {max} is too many; at most {MAX_RESTART_ATTEMPTS} are allowed"
            ));
        }
        let u = &self.update;
        if u.parallelism > MAX_PARALLELISM {
            return Err(format!(
                "update parallelism of {} is too large; at most {MAX_PARALLELISM} is allowed",
                u.parallelism
            ));
        }
        if u.delay_ms > MAX_DELAY_MS {
            return Err(format!(
                "update delay of {} ms is too long; at most {MAX_DELAY_MS} ms (24 hours) is allowed",
                u.delay_ms
            ));
        }
        if u.monitor_ms > MAX_DELAY_MS {
            return Err(format!(
                "update monitor of {} ms is too long; at most {MAX_DELAY_MS} ms (24 hours) is allowed",
                u.monitor_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Constraint, ConstraintKey, ConstraintOp, TaskSpec};

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            task: TaskSpec {
                image: "nginx".into(),
                ..TaskSpec::default()
            },
            ..ServiceSpec::default()
        }
    }

    #[test]
    fn accepts_a_plain_spec() {
        spec().validate().unwrap();
    }

    #[test]
    fn names_follow_docker() {
        for good in ["a", "web-1", "w.e_b", &"a".repeat(63)] {
            validate_service_name(good).unwrap();
        }
        for bad in ["", "-web", "we b", "wéb", &"a".repeat(64), "_x"] {
            assert!(validate_service_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_out_of_bounds() {
        let mut s = spec();
        s.task.image = "  ".into();
        assert_eq!(
            s.validate().unwrap_err(),
            "a service needs an image or a program"
        );
        let mut s = spec();
        s.task.args.push("a\0b".into());
        assert!(s.validate().unwrap_err().contains("NUL"));
        let mut s = spec();
        s.task.env.insert("A=B".into(), "c".into());
        assert!(s.validate().unwrap_err().contains("contains '='"));
        let mut s = spec();
        s.task.env.insert(String::new(), "c".into());
        assert!(s.validate().unwrap_err().contains("empty name"));
        let mut s = spec();
        s.mode = Mode::Replicated {
            replicas: MAX_REPLICAS + 1,
        };
        assert!(s.validate().unwrap_err().contains("replicas"));
        let mut s = spec();
        s.restart.delay_ms = MAX_DELAY_MS + 1;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.update.monitor_ms = MAX_DELAY_MS + 1;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.task.stop_grace_ms = MAX_STOP_GRACE_MS + 1;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.constraints = vec![
            Constraint {
                key: ConstraintKey::Role,
                op: ConstraintOp::Eq,
                value: "x".into(),
            };
            1
        ];
        assert!(s.validate().unwrap_err().contains("node.role"));
        let mut s = spec();
        s.constraints = vec![
            Constraint {
                key: ConstraintKey::Label("zone".into()),
                op: ConstraintOp::Eq,
                value: " a".into(),
            };
            1
        ];
        assert!(s.validate().unwrap_err().contains("read back"));
        let mut s = spec();
        s.task.args = vec!["x".repeat(MAX_ENTRY_BYTES + 1)];
        assert!(s.validate().unwrap_err().contains("bytes long"));
    }
}
