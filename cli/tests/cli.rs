//! The `moat` binary as a user runs it: arguments, output, exit codes.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use assert_cmd::Command;
use moat_pki::{
    CertExpiry, ClusterId, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role, RootCa,
    RootOptions,
};
use moat_tokens::JoinToken;
use predicates::prelude::*;
use predicates::str::contains;

fn moat() -> Command {
    Command::cargo_bin("moat").unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root_pem: std::path::PathBuf,
    node_der: std::path::PathBuf,
    bundle: std::path::PathBuf,
    node: NodeId,
    cluster: ClusterId,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ClusterId::generate();
    let now = OffsetDateTime::now_utc();
    let ca = RootCa::generate(cluster, &RootOptions::default(), now).unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let node = NodeId::generate();
    let cert = ca
        .sign_csr(
            key.csr().unwrap().as_ref(),
            node,
            Role::Manager,
            CertExpiry::DEFAULT,
            now,
        )
        .unwrap();
    let root_pem = dir.path().join("root.pem");
    std::fs::write(&root_pem, ca.certificate_pem()).unwrap();
    let node_der = dir.path().join("node.der");
    std::fs::write(&node_der, &cert.der).unwrap();
    let bundle = dir.path().join("bundle.pem");
    let other = RootCa::generate(
        cluster,
        &RootOptions {
            generation: 2,
            ..Default::default()
        },
        now,
    )
    .unwrap();
    std::fs::write(
        &bundle,
        format!("{}{}", ca.certificate_pem(), other.certificate_pem()),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        root_pem,
        node_der,
        bundle,
        node,
        cluster,
    }
}

#[test]
fn version_and_help() {
    moat()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("moat {}\n", env!("CARGO_PKG_VERSION")));
    moat().arg("help").assert().success().stdout(
        contains("cert")
            .and(contains("token"))
            .and(contains("mutual TLS 1.3")),
    );
    moat()
        .args(["help", "token", "inspect"])
        .assert()
        .success()
        .stdout(contains("The secret part is never"));
}

#[test]
fn usage_errors_exit_2() {
    moat().assert().code(2);
    moat()
        .args(["cert", "inspect"])
        .assert()
        .code(2)
        .stderr(contains("<PATH>"));
    moat()
        .args(["cert", "inspect", "x", "--format", "yaml"])
        .assert()
        .code(2);
    moat().args(["frobnicate"]).assert().code(2);
}

#[test]
fn cert_inspect_table() {
    let f = fixture();
    moat()
        .args(["cert", "inspect"])
        .arg(&f.node_der)
        .assert()
        .success()
        .stdout(
            contains(format!(
                "Subject:             CN={}, OU=moat-manager, O={}",
                f.node, f.cluster
            ))
            .and(contains("Public key:          ECDSA P-256"))
            .and(contains("Signature algorithm: ecdsa-with-SHA256"))
            .and(contains(format!(
                "DNS:{}.{}.moat.internal, DNS:manager.moat.internal",
                f.node, f.cluster
            )))
            .and(contains("CA:                  no"))
            .and(contains("(expires in 23h 59m)").or(contains("(expires in 24h 0m)")))
            .and(contains(format!(
                "moat node:           {} (manager) of cluster {}",
                f.node, f.cluster
            ))),
        );
    moat()
        .args(["cert", "inspect"])
        .arg(&f.bundle)
        .assert()
        .success()
        .stdout(
            contains("Certificate 1 of 2")
                .and(contains("Certificate 2 of 2"))
                .and(contains("CN=moat root CA 2")),
        );
}

#[test]
fn cert_inspect_json_and_stdin() {
    let f = fixture();
    let out = moat()
        .args(["cert", "inspect", "-", "--format", "json"])
        .pipe_stdin(&f.root_pem)
        .unwrap()
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let cert = &v.as_array().unwrap()[0];
    assert_eq!(cert["is_ca"], true);
    assert_eq!(cert["key_size"], "P-256");
    assert_eq!(
        cert["subject"],
        format!("CN=moat root CA 1, O={}", f.cluster)
    );
    assert_eq!(cert["sha256_fingerprint"].as_str().unwrap().len(), 95);
    assert!(cert["moat_node"].is_null());
}

#[test]
fn cert_inspect_bad_inputs_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    moat()
        .args(["cert", "inspect", "/nonexistent/cert.pem"])
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("moat: cannot read /nonexistent/cert.pem").and(contains("hint: ")));
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x30\x82\x01\x00garbage").unwrap();
    moat()
        .args(["cert", "inspect"])
        .arg(&junk)
        .assert()
        .code(1)
        .stderr(contains(
            "is not a certificate moat can read: malformed certificate",
        ));
    // A private key is not a certificate, and its contents are never echoed.
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let key_path = dir.path().join("key.der");
    std::fs::write(&key_path, key.to_pkcs8_der().as_slice()).unwrap();
    moat()
        .args(["cert", "inspect"])
        .arg(&key_path)
        .assert()
        .code(1)
        .stderr(contains("moat: "));
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'a'; 1 << 20]).unwrap();
    moat()
        .args(["cert", "inspect"])
        .arg(&big)
        .assert()
        .code(1)
        .stderr(contains("larger than"));
}

fn token() -> (JoinToken, String) {
    let t = JoinToken::generate(b"-----BEGIN CERTIFICATE-----\nbundle\n").unwrap();
    let text = t.expose_secret().to_string();
    (t, text)
}

#[test]
fn token_inspect_shows_pin_never_secret() {
    let (t, text) = token();
    let secret_field = text.split('-').nth(3).unwrap().to_string();
    let assert = moat().args(["token", "inspect", &text]).assert().success();
    let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(out.contains("Format:         MOATTKN version 1"), "{out}");
    assert!(
        out.contains(&format!("Root CA digest: {}", t.ca_digest())),
        "{out}"
    );
    assert!(
        out.contains(&format!("Fingerprint:    {}", t.fingerprint())),
        "{out}"
    );
    assert!(out.contains("Checksum:       valid"), "{out}");
    assert!(!out.contains(&secret_field[..10]), "secret leaked: {out}");

    let out = moat()
        .args(["token", "inspect", "-", "--format", "json"])
        .write_stdin(format!("{text}\n"))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["ca_digest"], t.ca_digest().to_string());
    assert_eq!(v["fingerprint"], t.fingerprint().to_string());
    assert_eq!(v["checksum_valid"], true);
    assert!(!String::from_utf8_lossy(&out).contains(&secret_field[..10]));
}

#[test]
fn token_inspect_names_each_mistake() {
    let (_, text) = token();
    let secret_field = text.split('-').nth(3).unwrap().to_string();
    let mut typo = text.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let cases = [
        (text[..text.len() - 3].to_string(), "copied completely"),
        (String::from_utf8(typo).unwrap(), "checksum does not match"),
        (
            text.replacen("MOATTKN-1", "MOATTKN-2", 1),
            "version 2 is not supported",
        ),
        (text.to_uppercase(), "invalid character"),
        ("SWMTKN-1-abc-def".to_string(), "Docker Swarm join token"),
        ("hello".to_string(), "not a moat join token"),
    ];
    for (input, message) in cases {
        let assert = moat().args(["token", "inspect", &input]).assert().code(1);
        let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(
            err.starts_with("moat: invalid join token: "),
            "{input}: {err}"
        );
        assert!(
            err.contains(message),
            "{input}: expected {message:?} in {err}"
        );
        assert!(err.contains("hint: "), "{err}");
        assert!(
            !err.to_lowercase().contains(&secret_field[..10]),
            "secret echoed: {err}"
        );
    }
}

/// Guards: a bad token is refused locally, before any daemon or manager is
/// contacted (no socket exists at the --host given).
#[test]
fn join_checks_the_token_before_connecting() {
    for token in ["garbage", "SWMTKN-1-abc-def"] {
        // In the environment, as `moat init` prints the command.
        let assert = moat()
            .args(["join", "--host", "unix:///nonexistent/moat.sock"])
            .arg("127.0.0.1:1")
            .env("MOAT_JOIN_TOKEN", token)
            .assert()
            .code(1)
            .stdout("");
        let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(
            err.starts_with("moat: MOAT_JOIN_TOKEN: invalid join token: "),
            "{err}"
        );
        assert!(err.contains("hint: ") && err.contains("moat join-token worker"));
        assert!(!err.contains("cannot connect"), "{err}");
        // On the command line: the same refusal, after the warning.
        let assert = moat()
            .args(["join", "--host", "unix:///nonexistent/moat.sock"])
            .args(["--token", token, "127.0.0.1:1"])
            .assert()
            .code(1)
            .stdout("");
        let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(err.contains("\nmoat: invalid join token: "), "{err}");
        assert!(!err.contains("cannot connect"), "{err}");
    }
    let (_, text) = token();
    let mut typo = text.into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    moat()
        .args(["join", "--host", "/nonexistent/moat.sock", "--token", "-"])
        .arg("127.0.0.1:1")
        .write_stdin(typo)
        .assert()
        .code(1)
        .stderr(contains("checksum does not match").and(contains("cannot connect").not()));
}

/// Issue 16, finding 7b: `--token TOKEN` still works but warns that every
/// local user can read it in `ps`; the environment and standard input do
/// not warn; no token at all says where to put one.
#[test]
fn join_warns_about_a_token_in_its_arguments() {
    let (_, text) = token();
    let join = || {
        let mut c = moat();
        c.args(["join", "--host", "unix:///nonexistent/moat.sock"])
            .env_remove("MOAT_JOIN_TOKEN");
        c
    };
    let warning = "warning: the join token is on the command line, where every user of this \
                   machine can read it (ps, /proc/PID/cmdline); pass it in MOAT_JOIN_TOKEN or \
                   with --token - on standard input\n";
    // A well-formed token: the join goes on (and fails here only for want
    // of a daemon).
    let err =
        |a: assert_cmd::assert::Assert| String::from_utf8(a.get_output().stderr.clone()).unwrap();
    let on_argv = err(join()
        .args(["--token", &text, "127.0.0.1:1"])
        .assert()
        .code(1));
    assert!(on_argv.starts_with(warning), "{on_argv}");
    assert!(on_argv.contains("cannot connect"), "{on_argv}");
    assert!(!on_argv.contains(&text), "token echoed: {on_argv}");
    let in_env = err(join()
        .arg("127.0.0.1:1")
        .env("MOAT_JOIN_TOKEN", format!("{text}\n"))
        .assert()
        .code(1));
    assert!(in_env.starts_with("moat: cannot connect"), "{in_env}");
    let on_stdin = err(join()
        .args(["--token", "-", "127.0.0.1:1"])
        .write_stdin(format!("{text}\n"))
        .assert()
        .code(1));
    assert!(on_stdin.starts_with("moat: cannot connect"), "{on_stdin}");
    let none = err(join().arg("127.0.0.1:1").assert().code(2));
    assert!(
        none.starts_with("moat: no join token: set MOAT_JOIN_TOKEN, or give --token -"),
        "{none}"
    );
    assert!(none.contains("hint: "), "{none}");
}

/// Issue 16, finding 5: `moat daemon --hostname` refuses a name with a
/// terminal escape before anything starts, and says so without echoing
/// the escape.
#[test]
fn daemon_refuses_a_hostile_hostname() {
    let dir = tempfile::tempdir().unwrap();
    for (name, why) in [
        ("\u{1b}]0;pwned\u{7}", "U+001B at character 1"),
        ("my_host", "'_' at character 3"),
        ("a..b", "empty label"),
        ("", "empty"),
    ] {
        let assert = moat()
            .args(["daemon", "--state-dir"])
            .arg(dir.path().join("state"))
            .args(["--hostname", name])
            .timeout(std::time::Duration::from_secs(20))
            .assert()
            .code(1);
        let err = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(err.starts_with("moat: invalid --hostname: "), "{err}");
        assert!(err.contains(why), "{name:?}: {err}");
        assert!(err.contains("hint: "), "{err}");
        assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
        assert!(!dir.path().join("state").exists(), "started anyway");
    }
}

#[test]
fn daemon_commands_without_a_daemon_say_how_to_start_one() {
    let commands: [&[&str]; 6] = [
        &["node", "ls"],
        &["info"],
        &["init"],
        &["join-token", "worker"],
        &["node", "promote", "a"],
        &["leave", "--force"],
    ];
    for args in commands {
        moat()
            .args(args)
            .args(["--host", "unix:///nonexistent/moat.sock"])
            .assert()
            .code(1)
            .stdout("")
            .stderr(
                contains(
                    "moat: cannot connect to the moat daemon at unix:///nonexistent/moat.sock",
                )
                .and(contains("hint: is `moat daemon` running?")),
            );
    }
    // MOAT_HOST names the daemon when --host does not.
    moat()
        .args(["node", "ls"])
        .env("MOAT_HOST", "unix:///nonexistent/env.sock")
        .assert()
        .code(1)
        .stderr(contains("unix:///nonexistent/env.sock"));
}

#[test]
fn cluster_usage_errors_exit_2() {
    moat().args(["join-token", "bogus"]).assert().code(2);
    // No token: neither --token nor MOAT_JOIN_TOKEN.
    moat()
        .args(["join", "127.0.0.1:4377"])
        .env_remove("MOAT_JOIN_TOKEN")
        .assert()
        .code(2);
    moat()
        .args(["node", "ls", "--host", "tcp://127.0.0.1:2375"])
        .assert()
        .code(2)
        .stderr(contains("unix socket"));
    moat()
        .args(["init", "--cert-expiry", "soon"])
        .assert()
        .code(2)
        .stderr(contains("24h"));
    moat()
        .args(["update", "--autolock", "maybe"])
        .assert()
        .code(2);
    moat()
        .args(["node", "update", "--availability", "off", "n"])
        .assert()
        .code(2);
    moat().args(["dev", "--managers", "0"]).assert().code(2);
}

/// Guards: `moat unlock` parses the key or share before it connects, so a
/// mistyped one is refused with the codec's message and never reaches a
/// locked daemon (where it would count as a failed, throttled attempt).
/// No socket exists at the --host given; only the well-formed key gets as
/// far as trying to connect.
#[test]
fn unlock_checks_the_key_before_connecting() {
    let key = moat_lock::UnlockKey::generate().unwrap();
    let text = key.expose_for_operator().to_string();
    let share = moat_lock::split_unlock_key(&key, 2, 3).unwrap()[0]
        .expose_for_operator()
        .to_string();
    // One character of the secret field changed, still in the alphabet.
    let typo = |t: &str| {
        let mut b = t.as_bytes().to_vec();
        let i = t.len() - 12;
        b[i] = if b[i] == b'a' { b'b' } else { b'a' };
        String::from_utf8(b).unwrap()
    };
    let cases = [
        (
            typo(&text),
            "invalid unlock key: the unlock key checksum does not match",
        ),
        (
            text[..text.len() - 1].to_string(),
            "invalid unlock key: the unlock key has 70 characters",
        ),
        (
            text.replace("MOATKEY", "MOATKEX"),
            "invalid unlock key: this is not a moat unlock key",
        ),
        (
            typo(&share),
            "invalid share: the share checksum does not match",
        ),
        (
            share[..share.len() - 2].to_string(),
            "invalid share: the share has 88 characters",
        ),
    ];
    for (input, message) in cases {
        let out = moat()
            .args(["unlock", "--host", "unix:///nonexistent/moat.sock"])
            .write_stdin(format!("{input}\n"))
            .assert()
            .code(1)
            .stdout("")
            .get_output()
            .clone();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with(&format!("moat: {message}")), "{err}");
        assert!(!err.contains("cannot connect"), "{err}");
        assert!(!err.contains(&input[12..60]), "secret echoed: {err}");
    }
    moat()
        .args(["unlock", "--host", "unix:///nonexistent/moat.sock"])
        .write_stdin(format!("{text}\n"))
        .assert()
        .code(1)
        .stderr(contains("cannot connect"));
}

/// Every command path the binary's own help lists (`["node", "ls"]`, …),
/// walking `moat … --help` down; `help` itself excluded. Independent of
/// the generators it checks.
fn help_visible_commands() -> Vec<Vec<String>> {
    fn walk(path: &[String], found: &mut Vec<Vec<String>>) {
        let out = moat().args(path).arg("--help").assert().success();
        let help = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        let Some(section) = help.split("\nCommands:\n").nth(1) else {
            return;
        };
        let names: Vec<String> = section
            .lines()
            .take_while(|l| !l.is_empty())
            // A name is indented by two spaces; a wrapped description by more.
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| *n != "help")
            .map(str::to_owned)
            .collect();
        assert!(!names.is_empty(), "no commands in:\n{help}");
        for name in names {
            let mut sub = path.to_vec();
            sub.push(name);
            found.push(sub.clone());
            walk(&sub, found);
        }
    }
    let mut found = Vec::new();
    walk(&[], &mut found);
    found
}

/// Issue 20 (deliver item 4): `moat man --out DIR` writes moat.1 and one
/// page per (nested) command the help lists, no more, each a roff page
/// with its own title; the paths are printed. Without --out, moat(1) on
/// standard output.
#[test]
fn man_pages_cover_every_command() {
    let commands = help_visible_commands();
    for expected in [
        &["node", "ls"][..],
        &["join-token", "create"],
        &["completion"],
    ] {
        assert!(
            commands.iter().any(|c| c == expected),
            "the help walk misses {expected:?}: {commands:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = moat()
        .args(["man", "--out"])
        .arg(&out_dir)
        .assert()
        .success();
    let printed = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let expected: Vec<String> = std::iter::once("moat".to_string())
        .chain(commands.iter().map(|c| format!("moat-{}", c.join("-"))))
        .collect();
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    let mut pages: Vec<String> = expected.iter().map(|n| format!("{n}.1")).collect();
    pages.sort();
    assert_eq!(written, pages, "one page per command, no more");
    assert_eq!(printed.lines().count(), pages.len(), "{printed}");
    for name in &expected {
        let path = out_dir.join(format!("{name}.1"));
        assert!(
            printed.contains(&format!("{}\n", path.display())),
            "{printed}"
        );
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(
            page.starts_with(".ie \\n(.g .ds Aq \\(aq\n"),
            "{name}: {page}"
        );
        assert!(
            page.contains(&format!("\n.TH {name} 1 ")) && page.contains("\n.SH NAME\n"),
            "{name}: {page}"
        );
        assert!(
            // The footer names moat, not the subcommand: "moat 0.1.0".
            page.contains(&format!(
                "{:?}",
                concat!("moat ", env!("CARGO_PKG_VERSION"))
            )),
            "{name}: {page}"
        );
    }
    let top = moat().arg("man").assert().success();
    let top = String::from_utf8(top.get_output().stdout.clone()).unwrap();
    assert!(
        top.contains("\n.TH moat 1 ") && top.contains("completion"),
        "{top}"
    );
}

/// Issue 20 (deliver item 4): the bash and zsh completion scripts offer
/// every command the help lists, under its parent.
#[test]
fn completions_cover_every_command() {
    let commands = help_visible_commands();
    let script = |shell: &str| {
        let out = moat().args(["completion", shell]).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    };
    let mut children: std::collections::BTreeMap<Vec<String>, Vec<String>> = Default::default();
    children.insert(vec![], vec![]);
    for c in &commands {
        children.entry(c.clone()).or_default();
        let (name, parent) = c.split_last().unwrap();
        children
            .entry(parent.to_vec())
            .or_default()
            .push(name.clone());
    }

    // bash: each command has its case, whose `opts` lists its
    // subcommands (clap_complete names `node ls` moat__subcmd__node__subcmd__ls).
    let bash = script("bash");
    assert!(bash.contains("complete -F _moat"), "not a bash script");
    for (path, subs) in &children {
        let id = std::iter::once("moat".to_string())
            .chain(path.iter().map(|p| p.replace('-', "__subcmd__")))
            .collect::<Vec<_>>()
            .join("__subcmd__");
        let case = format!("\n        {id})\n");
        let block = bash
            .split(&case)
            .nth(1)
            .unwrap_or_else(|| panic!("bash completes no `moat {}`", path.join(" ")));
        let opts = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("opts=\""))
            .unwrap();
        let offered: Vec<&str> = opts.trim_end_matches('"').split_whitespace().collect();
        for sub in subs {
            assert!(
                offered.contains(&sub.as_str()),
                "bash does not offer `{sub}` after `moat {}`: {opts}",
                path.join(" ")
            );
        }
    }

    // zsh: each command with subcommands has a `…_commands` list of them.
    let zsh = script("zsh");
    assert!(zsh.starts_with("#compdef moat"), "not a zsh script");
    for (path, subs) in children.iter().filter(|(_, s)| !s.is_empty()) {
        let id = std::iter::once("_moat".to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("__subcmd__");
        let list = zsh
            .split(&format!("\n{id}_commands() {{\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n    )").next())
            .unwrap_or_else(|| panic!("zsh lists no subcommands of `moat {}`", path.join(" ")));
        for sub in subs {
            assert!(
                list.contains(&format!("\n'{sub}:")) || list.contains(&format!("('{sub}:")),
                "zsh does not offer `{sub}` after `moat {}`:\n{list}",
                path.join(" ")
            );
        }
    }
    // The other shells generate too.
    for shell in ["fish", "elvish", "powershell"] {
        assert!(script(shell).contains("join-token"), "{shell}");
    }
    moat().args(["completion", "tcsh"]).assert().code(2);
}

/// Issue 20, finding 7: `-H` works before the command, as docker's does,
/// and after it; either wins over MOAT_HOST, and the one nearer the
/// command wins over the other.
#[test]
fn host_before_or_after_the_command() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["-H", "unix:///nonexistent/top.sock", "node", "ls"],
            "top.sock",
        ),
        (
            &["node", "ls", "-H", "unix:///nonexistent/sub.sock"],
            "sub.sock",
        ),
        (
            &["--host", "unix:///nonexistent/top.sock", "join-token", "ls"],
            "top.sock",
        ),
        (
            &[
                "-H",
                "unix:///nonexistent/top.sock",
                "node",
                "ls",
                "-H",
                "unix:///nonexistent/sub.sock",
            ],
            "sub.sock",
        ),
    ];
    for (args, socket) in cases {
        moat()
            .args(args)
            .env("MOAT_HOST", "unix:///nonexistent/env.sock")
            .assert()
            .code(1)
            .stderr(contains(format!(
                "cannot connect to the moat daemon at unix:///nonexistent/{socket}"
            )));
    }
    moat()
        .args(["-H", "tcp://127.0.0.1:2375", "node", "ls"])
        .assert()
        .code(2)
        .stderr(contains("unix socket"));
}

/// Issue 20, finding 4: one range for `--cert-expiry`, the daemon's
/// (moat_pki::CertExpiry), checked when the arguments are parsed, on every
/// command that takes it; the help states it from the same constants, and
/// a number without a unit is answered with a value that is accepted.
#[test]
fn cert_expiry_has_one_range_checked_at_parse_time() {
    let range = format!(
        "{} to {}",
        moat_pki::compact_duration(CertExpiry::MIN),
        moat_pki::compact_duration(CertExpiry::MAX)
    );
    assert_eq!(range, "1m to 365d");
    let commands: [&[&str]; 3] = [&["init"], &["update"], &["ca", "--rotate"]];
    for command in commands {
        let help = moat().args(command).arg("--help").assert().success();
        let help = String::from_utf8(help.get_output().stdout.clone()).unwrap();
        let flag = help
            .split("--cert-expiry <DURATION>")
            .nth(1)
            .unwrap_or_else(|| panic!("{command:?} has no --cert-expiry"));
        let flag = flag
            .split("\n\n")
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(flag.contains(&format!(": {range},")), "{command:?}: {flag}");
        assert!(!flag.contains("1s"), "{command:?}: {flag}");

        let refused = |value: &str, says: &str| {
            moat()
                .args(command)
                .args([
                    "--cert-expiry",
                    value,
                    "-H",
                    "unix:///nonexistent/moat.sock",
                ])
                .assert()
                .code(2)
                .stderr(contains(says));
        };
        for bad in ["10s", "48ms", "59s", "366d"] {
            refused(bad, &format!("{bad} is out of range: give {range}"));
        }
        // No unit: the suggestion is one the parser takes (not `48ms`).
        refused("48", "48 needs a unit, e.g. 48h");
        refused("90 minutes 500ms", "whole number of seconds");
        // In range: parsed, then the daemon is looked for.
        for good in ["1m", "48h", "365d"] {
            moat()
                .args(command)
                .args(["--cert-expiry", good, "-H", "unix:///nonexistent/moat.sock"])
                .assert()
                .code(1)
                .stderr(contains("cannot connect"));
        }
    }
    // The suggestion for a bare number is always accepted where it is made.
    for n in ["1", "48", "400", "100000"] {
        let out = moat().args(["update", "--cert-expiry", n]).assert().code(2);
        let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
        let suggested = err
            .split("e.g. ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no suggestion: {err}"));
        let d = humantime::parse_duration(suggested).unwrap();
        assert!(CertExpiry::new(d).is_ok(), "{n}: suggested {suggested}");
    }
}

/// Issue 20, finding 11: messages and hints quote a command one way, in
/// backticks (hint: run `moat join-token worker` on a manager), never in
/// single or double quotes. Scans every crate's sources and snapshots.
#[test]
fn messages_quote_commands_in_backticks() {
    fn scan(dir: &std::path::Path, bad: &[String], found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "fuzz" | "node_modules") {
                    scan(&path, bad, found);
                }
            } else if name.ends_with(".rs") || name.ends_with(".snap") {
                // Insta's `.snap` files are text; a raft snapshot of a
                // Docker Swarm fixture (swarm/tests/fixtures) is not.
                let Ok(text) = String::from_utf8(std::fs::read(&path).unwrap()) else {
                    continue;
                };
                for (i, line) in text.lines().enumerate() {
                    if bad.iter().any(|b| line.contains(b.as_str())) {
                        found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                    }
                }
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    // Built here, so that this file does not match itself.
    let bad = [format!("'{}", "moat "), format!("\\\"{}", "moat ")];
    let mut found = Vec::new();
    scan(root, &bad, &mut found);
    assert!(
        found.is_empty(),
        "quote commands in backticks:\n{}",
        found.join("\n")
    );
    // And as printed: a token mistake's hint.
    moat()
        .args(["token", "inspect", "MOATTKN-1-bogus"])
        .assert()
        .code(1)
        .stderr(contains("hint: ").and(contains("`moat join-token worker` (or `manager`)")));
}

/// Issue 20, finding 8: a cause is printed once, not once per error in
/// the chain that names it.
#[test]
fn audit_verify_of_a_missing_bundle_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = moat()
        .args(["audit", "verify"])
        .arg(dir.path())
        .assert()
        .code(1);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    let first = err.lines().next().unwrap();
    assert!(
        first.starts_with("moat: cannot read the audit bundle ") && first.contains("heads.json: "),
        "{err}"
    );
    assert_eq!(
        first.matches("No such file or directory").count(),
        1,
        "{err}"
    );
    assert!(err.contains("hint: pass the file or directory written by `moat audit export"));
}
