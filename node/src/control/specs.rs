//! From what the operator typed (moat-api's service requests) to a
//! checked [`ServiceSpec`], and back for `service inspect`: the one place
//! where flags meet the orchestrator's model. Every refusal names the flag
//! and what it accepts; nothing is proposed until the whole spec checks.

use std::collections::BTreeMap;

use moat_api::{ErrorKind, ServiceCreateRequest, ServiceSettings, ServiceUpdateRequest};
use moat_orchestrator::{
    DEFAULT_SECRET_MODE, FailureAction, IdentitySpec, Mode, RestartCondition, Runtime, SecretKind,
    SecretRef, ServiceSpec, State as Orchestrator, TaskSpec, parse_constraint, parse_spread,
};

use crate::error::NodeError;

fn invalid(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorKind::InvalidArgument, message)
}

/// The spec of a new service (`id` names it when `--name` is absent);
/// its secrets and configs are looked up in `orch`.
pub(crate) fn create_spec(
    req: &ServiceCreateRequest,
    id: &str,
    orch: &Orchestrator,
) -> Result<ServiceSpec, NodeError> {
    let runtime = match req.runtime.as_deref() {
        None => Runtime::Process,
        Some(r) => r
            .parse::<Runtime>()
            .map_err(|e| invalid(format!("--runtime: {e}")))?,
    };
    let global = match req.mode.as_deref() {
        None | Some("replicated") => false,
        Some("global") => true,
        Some(other) => {
            return Err(invalid(format!(
                "--mode: unknown mode {other:?}: use \"replicated\" or \"global\""
            )));
        }
    };
    let mode = match (global, req.settings.replicas) {
        (true, Some(_)) => {
            return Err(invalid(
                "--replicas can only be used with replicated mode, not with --mode global",
            ));
        }
        (true, None) => Mode::Global,
        (false, replicas) => Mode::Replicated {
            replicas: replicas.unwrap_or(1),
        },
    };
    if req.image.trim().is_empty() {
        return Err(invalid(match runtime {
            Runtime::Process => {
                "no program given: `moat service create [OPTIONS] PROGRAM [ARG...]`"
            }
            Runtime::Docker => {
                "no image given: `moat service create --runtime docker [OPTIONS] IMAGE [ARG...]`"
            }
        }));
    }
    let name = match &req.name {
        Some(n) => n.clone(),
        None => format!("svc-{}", id.get(..10).unwrap_or(id).to_lowercase()),
    };
    let mut spec = ServiceSpec {
        name,
        labels: req.labels.clone(),
        task: TaskSpec {
            runtime,
            image: req.image.clone(),
            args: req.args.clone(),
            env: env_map(&req.env)?,
            identity: Some(IdentitySpec::default()),
            ..TaskSpec::default()
        },
        mode,
        ..ServiceSpec::default()
    };
    apply_settings(&mut spec, &req.settings)?;
    for (kind, texts) in [
        (SecretKind::Secret, &req.secrets),
        (SecretKind::Config, &req.configs),
    ] {
        for text in texts {
            spec.task.secrets.push(secret_ref(orch, kind, text)?);
        }
    }
    spec.validate().map_err(invalid)?;
    Ok(spec)
}

/// A `--secret`/`--config` flag, as Docker writes it (`NAME`, or
/// `source=NAME,target=FILE,mode=0400`; moat adds `NAME@VERSION`, which
/// pins the version), resolved against the secrets there are now.
pub(crate) fn secret_ref(
    orch: &Orchestrator,
    kind: SecretKind,
    text: &str,
) -> Result<SecretRef, NodeError> {
    let flag = format!("--{kind}");
    let mut source = None;
    let mut target = None;
    let mut mode = None;
    for (i, part) in text.split(',').enumerate() {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None if i == 0 => ("source", part.trim()),
            None => {
                return Err(invalid(format!(
                    "{flag} {text:?}: {part:?} is not KEY=VALUE (keys: source, target, mode)"
                )));
            }
        };
        match key {
            "source" | "src" => source = Some(value),
            "target" => target = Some(value),
            "mode" => {
                let m = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        invalid(format!(
                            "{flag} {text:?}: mode {value:?} is not an octal file mode such as 0400"
                        ))
                    })?;
                mode = Some(m);
            }
            "uid" | "gid" => {
                return Err(invalid(format!(
                    "{flag} {text:?}: {key} is not supported; the file belongs to the user the task runs as"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "{flag} {text:?}: unknown key {other:?} (keys: source, target, mode)"
                )));
            }
        }
    }
    let source = source
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("{flag} {text:?}: name the {kind} (source=NAME)")))?;
    let (name, pinned) = match source.rsplit_once('@') {
        Some((name, v)) => {
            let v: u64 = v
                .parse()
                .map_err(|_| invalid(format!("{flag} {text:?}: {v:?} is not a version number")))?;
            (name, Some(v))
        }
        None => (source, None),
    };
    let secret = orch
        .secret(kind, name)
        .filter(|s| s.name == name || s.id == name)
        .ok_or_else(|| {
            NodeError::new(
                ErrorKind::NotFound,
                format!("{flag}: no such {kind}: {name}"),
            )
            .hint(format!("create it with `moat {kind} create {name} FILE`"))
        })?;
    let version = match pinned {
        Some(v) if secret.version(v).is_none() => {
            let kept: Vec<String> = secret
                .versions
                .iter()
                .map(|v| v.version.to_string())
                .collect();
            return Err(invalid(format!(
                "{flag} {text:?}: {kind} {name} has no version {v} (kept: {})",
                kept.join(", ")
            )));
        }
        Some(v) => v,
        None => secret.latest().map_or(1, |v| v.version),
    };
    let default_mode = match kind {
        SecretKind::Secret => DEFAULT_SECRET_MODE,
        SecretKind::Config => 0o444,
    };
    Ok(SecretRef {
        kind,
        secret_id: secret.id.clone(),
        name: secret.name.clone(),
        version,
        pinned: pinned.is_some(),
        target: target.unwrap_or(&secret.name).to_owned(),
        mode: mode.unwrap_or(default_mode),
    })
}

/// `spec` changed as `service update` asks; added secrets and configs are
/// looked up in `orch`.
pub(crate) fn updated_spec(
    current: &ServiceSpec,
    req: &ServiceUpdateRequest,
    orch: &Orchestrator,
) -> Result<ServiceSpec, NodeError> {
    let mut spec = current.clone();
    for (kind, rm, add) in [
        (SecretKind::Secret, &req.secret_rm, &req.secret_add),
        (SecretKind::Config, &req.config_rm, &req.config_add),
    ] {
        for name in rm {
            let before = spec.task.secrets.len();
            spec.task
                .secrets
                .retain(|r| r.kind != kind || (r.name != *name && r.target != *name));
            if spec.task.secrets.len() == before {
                return Err(invalid(format!(
                    "--{kind}-rm: the service has no {kind} {name}"
                )));
            }
        }
        for text in add {
            spec.task.secrets.push(secret_ref(orch, kind, text)?);
        }
    }
    if let Some(image) = &req.image {
        if image.trim().is_empty() {
            return Err(invalid("--image: empty image or program"));
        }
        spec.task.image = image.clone();
    }
    if let Some(args) = &req.args {
        spec.task.args = args.clone();
    }
    for key in &req.env_rm {
        spec.task.env.remove(key);
    }
    spec.task.env.extend(env_map(&req.env_add)?);
    for text in &req.constraint_rm {
        let c = parse_constraint(text).map_err(|e| invalid(format!("--constraint-rm: {e}")))?;
        let before = spec.constraints.len();
        spec.constraints.retain(|x| *x != c);
        if spec.constraints.len() == before {
            return Err(invalid(format!(
                "--constraint-rm: the service has no constraint {c}"
            )));
        }
    }
    for text in &req.constraint_add {
        let c = parse_constraint(text).map_err(|e| invalid(format!("--constraint-add: {e}")))?;
        if !spec.constraints.contains(&c) {
            spec.constraints.push(c);
        }
    }
    if req.settings.replicas.is_some() && spec.mode == Mode::Global {
        return Err(invalid(
            "--replicas can only be used with replicated mode; this service is global",
        ));
    }
    apply_settings(&mut spec, &req.settings)?;
    spec.validate().map_err(invalid)?;
    Ok(spec)
}

/// Sets what `settings` gives; the rest stays.
fn apply_settings(spec: &mut ServiceSpec, s: &ServiceSettings) -> Result<(), NodeError> {
    if let Some(n) = s.replicas {
        spec.mode = Mode::Replicated { replicas: n };
    }
    if !s.constraints.is_empty() {
        spec.constraints = s
            .constraints
            .iter()
            .map(|c| parse_constraint(c).map_err(|e| invalid(format!("--constraint: {e}"))))
            .collect::<Result<_, _>>()?;
    }
    if !s.placement_prefs.is_empty() {
        spec.spread_over = s
            .placement_prefs
            .iter()
            .map(|p| parse_spread(p).map_err(|e| invalid(format!("--placement-pref: {e}"))))
            .collect::<Result<_, _>>()?;
    }
    if let Some(c) = &s.restart_condition {
        spec.restart.condition = match c.as_str() {
            "any" => RestartCondition::Any,
            "on-failure" => RestartCondition::OnFailure,
            "none" => RestartCondition::None,
            other => {
                return Err(invalid(format!(
                    "--restart-condition: unknown condition {other:?}: use any, on-failure or none"
                )));
            }
        };
    }
    if let Some(ms) = s.restart_delay_ms {
        spec.restart.delay_ms = ms;
    }
    if let Some(n) = s.restart_max_attempts {
        // Docker: 0 means no limit.
        spec.restart.max_attempts = (n > 0).then_some(n);
    }
    if let Some(n) = s.update_parallelism {
        spec.update.parallelism = n;
    }
    if let Some(ms) = s.update_delay_ms {
        spec.update.delay_ms = ms;
    }
    if let Some(a) = &s.update_failure_action {
        spec.update.failure_action = match a.as_str() {
            "pause" => FailureAction::Pause,
            "rollback" => FailureAction::Rollback,
            other => {
                return Err(invalid(format!(
                    "--update-failure-action: unknown action {other:?}: use pause or rollback"
                )));
            }
        };
    }
    if let Some(ms) = s.update_monitor_ms {
        spec.update.monitor_ms = ms;
    }
    if let Some(ms) = s.stop_grace_ms {
        spec.task.stop_grace_ms = ms;
    }
    match (s.identity, s.identity_ttl_secs) {
        (Some(false), Some(_)) => {
            return Err(invalid(
                "--identity-ttl sets the lifetime of the identity that --no-identity turns off: give one of them",
            ));
        }
        (Some(false), None) => spec.task.identity = None,
        (Some(true), None) => {
            spec.task.identity.get_or_insert_with(IdentitySpec::default);
        }
        (_, Some(secs)) => {
            moat_pki::WorkloadTtl::new(std::time::Duration::from_secs(secs))
                .map_err(|e| invalid(format!("--identity-ttl: {e}")))?;
            spec.task.identity = Some(IdentitySpec { ttl_secs: secs });
        }
        (None, None) => {}
    }
    Ok(())
}

/// `K=V` pairs as a map; a pair without `=` or with an empty name is
/// refused (Docker would read the value from the client's environment,
/// which a daemon cannot see).
fn env_map(pairs: &[String]) -> Result<BTreeMap<String, String>, NodeError> {
    let mut env = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(invalid(format!(
                "--env {pair:?} has no value: write {pair}=VALUE"
            )));
        };
        if k.is_empty() {
            return Err(invalid("--env: a variable needs a name (NAME=VALUE)"));
        }
        env.insert(k.to_owned(), v.to_owned());
    }
    Ok(env)
}

/// Docker's words for a restart condition and a failure action.
pub(crate) fn restart_condition_name(c: RestartCondition) -> &'static str {
    match c {
        RestartCondition::Any => "any",
        RestartCondition::OnFailure => "on-failure",
        RestartCondition::None => "none",
    }
}

/// See [`restart_condition_name`].
pub(crate) fn failure_action_name(a: FailureAction) -> &'static str {
    match a {
        FailureAction::Pause => "pause",
        FailureAction::Rollback => "rollback",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(image: &str) -> ServiceCreateRequest {
        ServiceCreateRequest {
            image: image.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_create_request_becomes_a_checked_spec() {
        let mut r = req("/bin/sleep");
        r.name = Some("web".into());
        r.args = vec!["30".into()];
        r.env = vec!["A=1".into(), "B=x=y".into()];
        r.settings.replicas = Some(3);
        r.settings.constraints = vec!["node.labels.zone==a".into()];
        r.settings.placement_prefs = vec!["spread=node.labels.rack".into()];
        r.settings.restart_condition = Some("on-failure".into());
        r.settings.restart_max_attempts = Some(0);
        r.settings.update_failure_action = Some("rollback".into());
        let spec = create_spec(&r, "ABCDEFGHIJKLMN", &Orchestrator::default()).unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.mode, Mode::Replicated { replicas: 3 });
        assert_eq!(spec.task.env["B"], "x=y");
        assert_eq!(spec.constraints[0].to_string(), "node.labels.zone==a");
        assert_eq!(spec.spread_over, vec!["rack".to_string()]);
        assert_eq!(spec.restart.condition, RestartCondition::OnFailure);
        assert_eq!(spec.restart.max_attempts, None);
        assert_eq!(spec.update.failure_action, FailureAction::Rollback);
        // Without --name, a name from the id.
        let spec = create_spec(
            &req("/bin/true"),
            "ABCDEFGHIJKLMN",
            &Orchestrator::default(),
        )
        .unwrap();
        assert_eq!(spec.name, "svc-abcdefghij");
    }

    #[test]
    fn bad_input_is_refused_with_the_flag_named() {
        let cases: Vec<(ServiceCreateRequest, &str)> = vec![
            (req(" "), "no program given"),
            (
                ServiceCreateRequest {
                    runtime: Some("vm".into()),
                    ..req("x")
                },
                "--runtime: unknown runtime \"vm\"",
            ),
            (
                ServiceCreateRequest {
                    mode: Some("global".into()),
                    settings: ServiceSettings {
                        replicas: Some(2),
                        ..Default::default()
                    },
                    ..req("x")
                },
                "--replicas can only be used with replicated mode",
            ),
            (
                ServiceCreateRequest {
                    settings: ServiceSettings {
                        constraints: vec!["node.zone==a".into()],
                        ..Default::default()
                    },
                    ..req("x")
                },
                "--constraint: unknown constraint key",
            ),
            (
                ServiceCreateRequest {
                    env: vec!["FOO".into()],
                    ..req("x")
                },
                "--env \"FOO\" has no value",
            ),
            (
                ServiceCreateRequest {
                    settings: ServiceSettings {
                        restart_condition: Some("always".into()),
                        ..Default::default()
                    },
                    ..req("x")
                },
                "--restart-condition: unknown condition",
            ),
            (
                ServiceCreateRequest {
                    name: Some("-bad".into()),
                    ..req("x")
                },
                "name",
            ),
        ];
        for (r, want) in cases {
            let e = create_spec(&r, "ABCDEFGHIJKLMN", &Orchestrator::default()).unwrap_err();
            assert_eq!(e.api_kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn an_update_changes_only_what_it_names() {
        let mut r = req("/bin/sleep");
        r.name = Some("web".into());
        r.env = vec!["A=1".into(), "B=2".into()];
        r.settings.constraints = vec!["node.role==worker".into()];
        let spec = create_spec(&r, "ABCDEFGHIJKLMN", &Orchestrator::default()).unwrap();
        let u = ServiceUpdateRequest {
            service: "web".into(),
            env_add: vec!["C=3".into()],
            env_rm: vec!["A".into()],
            constraint_rm: vec!["node.role==worker".into()],
            constraint_add: vec!["node.labels.zone!=b".into()],
            ..Default::default()
        };
        let new = updated_spec(&spec, &u, &Orchestrator::default()).unwrap();
        assert_eq!(new.task.env.keys().collect::<Vec<_>>(), ["B", "C"]);
        assert_eq!(new.constraints.len(), 1);
        assert_eq!(new.constraints[0].to_string(), "node.labels.zone!=b");
        assert_eq!(new.task.image, "/bin/sleep");
        assert_eq!(new.mode, spec.mode);
        let e = updated_spec(
            &spec,
            &ServiceUpdateRequest {
                constraint_rm: vec!["node.labels.x==y".into()],
                ..Default::default()
            },
            &Orchestrator::default(),
        )
        .unwrap_err();
        assert!(
            e.message().contains("has no constraint node.labels.x==y"),
            "{e:?}"
        );
    }
}
