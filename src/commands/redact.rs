//! `sitegate redact [FILE]`: the redaction engine as a filter, for cleaning a log or a
//! dump before it is shared.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config;
use crate::redact::stream::Redacting;

fn redactor_for(policy: Option<&Path>) -> Option<Arc<crate::redact::Redactor>> {
    match policy {
        Some(main) => match config::load(main) {
            Ok(p) => Some(p.redaction.redactor),
            Err(diags) => {
                super::print_diagnostics(main, &diags);
                None
            }
        },
        None => Some(crate::redact::default_redactor()),
    }
}

/// `sitegate redact --check FILE...`: prints `file:line:col: detector` for every secret
/// (never the secret) and exits 1 when there is one, 0 when there is none, 2 when a file
/// cannot be read.
pub fn check(files: &[std::path::PathBuf], policy: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(redactor) = redactor_for(policy) else {
        return Ok(ExitCode::from(2));
    };
    let mut total = 0;
    let stdin = [std::path::PathBuf::from("-")];
    let files = if files.is_empty() { &stdin[..] } else { files };
    for path in files {
        let text = if path.as_os_str() == "-" {
            let mut t = Vec::new();
            std::io::stdin().lock().read_to_end(&mut t).map(|_| t)
        } else {
            std::fs::read(path)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sitegate redact: cannot read {}: {e}", path.display());
                return Ok(ExitCode::from(2));
            }
        };
        for (line, col, detector) in crate::redact::locate(&redactor, &text) {
            println!("{}:{line}:{col}: {detector}", path.display());
            total += 1;
        }
    }
    eprintln!(
        "sitegate redact --check: {total} secret{} found",
        if total == 1 { "" } else { "s" }
    );
    Ok(if total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Copies `file` (or stdin) to stdout with secrets redacted, streaming in 64 KiB
/// pieces; prints the findings per detector on stderr. With `policy`, its
/// `[redaction]` settings (site patterns, replacement, ...) apply.
pub fn redact(file: Option<&Path>, policy: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(redactor) = redactor_for(policy) else {
        return Ok(ExitCode::FAILURE);
    };
    let mut input: Box<dyn Read> = match file {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut stream = Redacting::new(Arc::clone(&redactor));
    let mut buf = vec![0u8; 64 * 1024];
    let mut counts: BTreeMap<Arc<str>, usize> = BTreeMap::new();
    let cut = std::cell::Cell::new(false);
    let mut write = |(bytes, found): (bytes::Bytes, Vec<crate::redact::Finding>)| {
        for f in found {
            cut.set(cut.get() | f.cut);
            *counts.entry(f.detector).or_default() += 1;
        }
        out.write_all(&bytes)
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        write(stream.push(&buf[..n], false))?;
        if cut.get() {
            break;
        }
    }
    if !cut.get() {
        write(stream.push(&[], true))?;
    }
    out.flush()?;
    if cut.get() {
        // What follows may be more of the same secret: the output stops at it.
        eprintln!(
            "sitegate redact: a secret longer than its detector's window (a private key block with no END within 64 KiB); output stopped there"
        );
        return Ok(ExitCode::FAILURE);
    }
    let total: usize = counts.values().sum();
    let detail: Vec<String> = counts.iter().map(|(d, n)| format!("{d}: {n}")).collect();
    eprintln!(
        "sitegate redact: {total} secret{} redacted{}",
        if total == 1 { "" } else { "s" },
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", detail.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
