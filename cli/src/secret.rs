//! `moat secret …` and `moat config …`: the same commands for both kinds.
//! A secret's bytes go from the file (or standard input) straight into a
//! wiped buffer and out to the daemon; nothing prints them.

use std::io::{self, Read, Write};
use std::path::Path;

use moat_api::{
    SecretChanged, SecretCreateRequest, SecretInfo, SecretRefRequest, SecretRemoveRequest,
    SecretRemoveResponse, SecretString, SecretUpdateRequest, path,
};
use moat_orchestrator::MAX_SECRET_BYTES;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::args::{Format, Secret, SecretCreate, SecretInspect, SecretLs, SecretRm, SecretUpdate};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, safe, write_fields, write_json, write_table};
use crate::render::{human_duration, parse_time};

/// Runs `moat <kind> <command>`; `kind` is `secret` or `config`.
pub(crate) fn run(kind: &str, command: &Secret) -> Result<(), Failure> {
    match command {
        Secret::Create(args) => create(kind, args),
        Secret::Update(args) => update(kind, args),
        Secret::Ls(args) => ls(kind, args),
        Secret::Inspect(args) => inspect(kind, args),
        Secret::Rm(args) => rm(kind, args),
    }
}

/// The file's (or standard input's) bytes, refused past 500 KiB before
/// more is read.
fn read_data(kind: &str, file: &Path) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let limit = MAX_SECRET_BYTES as u64 + 1;
    let mut data = Zeroizing::new(Vec::new());
    let what = if file == Path::new("-") {
        io::stdin().lock().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    what.map_err(|e| {
        Failure::new(
            anyhow::anyhow!("cannot read {}: {e}", file.display()),
            format!("give the {kind}'s file, or `-` to read standard input"),
        )
    })?;
    if data.len() > MAX_SECRET_BYTES {
        return Err(Failure::new(
            anyhow::anyhow!(
                "{} is larger than {MAX_SECRET_BYTES} bytes (500 KiB), the most a {kind} may hold",
                file.display()
            ),
            "store a large file elsewhere and keep only its key or password here",
        ));
    }
    Ok(data)
}

fn base64(data: &[u8]) -> SecretString {
    SecretString::new(data_encoding::BASE64.encode(data))
}

fn create(kind: &str, args: &SecretCreate) -> Result<(), Failure> {
    let data = read_data(kind, &args.file)?;
    let request = SecretCreateRequest {
        kind: kind.to_owned(),
        name: args.name.clone(),
        data_base64: base64(&data),
        labels: args.label.iter().cloned().collect(),
    };
    drop(data);
    let created: SecretChanged = block_on(async {
        client(&args.host)
            .post(path::SECRET_CREATE, &request)
            .await
            .or_fail()
    })?;
    writeln!(io::stdout().lock(), "{}", safe(&created.id))?;
    Ok(())
}

fn update(kind: &str, args: &SecretUpdate) -> Result<(), Failure> {
    let data = read_data(kind, &args.file)?;
    let request = SecretUpdateRequest {
        kind: kind.to_owned(),
        secret: args.name.clone(),
        data_base64: base64(&data),
    };
    drop(data);
    let changed: SecretChanged = block_on(async {
        client(&args.host)
            .post(path::SECRET_UPDATE, &request)
            .await
            .or_fail()
    })?;
    let mut out = crate::output::stdout();
    writeln!(out, "{} version {}", safe(&changed.name), changed.version)?;
    for s in &changed.services_updated {
        writeln!(out, "service {} rolls onto it", safe(s))?;
    }
    out.flush()?;
    Ok(())
}

fn ls(kind: &str, args: &SecretLs) -> Result<(), Failure> {
    let request = SecretRefRequest {
        kind: kind.to_owned(),
        secret: String::new(),
    };
    let list: Vec<SecretInfo> = block_on(async {
        client(&args.host)
            .post(path::SECRETS, &request)
            .await
            .or_fail()
    })?;
    let mut out = crate::output::stdout();
    if args.quiet {
        for s in &list {
            writeln!(out, "{}", safe(&s.id))?;
        }
    } else {
        match args.format {
            Format::Json => write_json(&mut out, &list)?,
            Format::Table => secret_table(&mut out, &list, OffsetDateTime::now_utc())?,
        }
    }
    out.flush()?;
    Ok(())
}

fn inspect(kind: &str, args: &SecretInspect) -> Result<(), Failure> {
    let request = SecretRefRequest {
        kind: kind.to_owned(),
        secret: args.name.clone(),
    };
    let info: SecretInfo = block_on(async {
        client(&args.host)
            .post(path::SECRET_INSPECT, &request)
            .await
            .or_fail()
    })?;
    let mut out = crate::output::stdout();
    match args.format {
        Format::Json => write_json(&mut out, &info)?,
        Format::Table => secret_fields(&mut out, &info)?,
    }
    out.flush()?;
    Ok(())
}

fn rm(kind: &str, args: &SecretRm) -> Result<(), Failure> {
    let request = SecretRemoveRequest {
        kind: kind.to_owned(),
        secrets: args.names.clone(),
    };
    let removed: SecretRemoveResponse = block_on(async {
        client(&args.host)
            .post(path::SECRET_REMOVE, &request)
            .await
            .or_fail()
    })?;
    let mut out = crate::output::stdout();
    for name in &removed.removed {
        writeln!(out, "{}", safe(name))?;
    }
    out.flush()?;
    Ok(())
}

fn ago(rfc3339: &str, now: OffsetDateTime) -> String {
    parse_time(rfc3339).map_or_else(
        || rfc3339.to_owned(),
        |t| format!("{} ago", human_duration((now - t).unsigned_abs())),
    )
}

/// `ls`: ID, NAME, VERSION, CREATED, UPDATED, USED BY.
fn secret_table(out: &mut impl Write, list: &[SecretInfo], now: OffsetDateTime) -> io::Result<()> {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.name.clone(),
                s.version.to_string(),
                ago(&s.created_at, now),
                ago(&s.updated_at, now),
                s.used_by.join(", "),
            ]
        })
        .collect();
    write_table(
        out,
        &["ID", "NAME", "VERSION", "CREATED", "UPDATED", "USED BY"],
        &rows,
    )
}

/// `inspect`: the fields, one line per version; a config's data when it
/// is text.
fn secret_fields(out: &mut impl Write, s: &SecretInfo) -> io::Result<()> {
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut fields = vec![
        ("ID", s.id.clone()),
        ("Name", s.name.clone()),
        ("Kind", s.kind.clone()),
        ("Labels", labels.join(", ")),
        ("Created", s.created_at.clone()),
        ("Updated", s.updated_at.clone()),
        ("Version", s.version.to_string()),
        ("Used by", s.used_by.join(", ")),
    ];
    for v in &s.versions {
        let tasks = if v.tasks.is_empty() {
            "no task".to_owned()
        } else {
            format!("tasks {}", v.tasks.join(", "))
        };
        fields.push((
            "Version",
            format!(
                "{}: {} bytes, {}, {}, {tasks}",
                v.version, v.size, v.digest, v.created_at
            ),
        ));
    }
    if let Some(data) = &s.data_base64 {
        let text = data_encoding::BASE64
            .decode(data.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        fields.push((
            "Data",
            text.unwrap_or_else(|| "(binary; see --format json)".to_owned()),
        ));
    }
    write_fields(out, &fields)
}
