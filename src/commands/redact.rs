//! `sitegate redact [FILE]`: the redaction engine as a filter, for cleaning a log or a
//! dump before it is shared.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config;
use crate::redact::stream::Redacting;

/// Copies `file` (or stdin) to stdout with secrets redacted, streaming in 64 KiB
/// pieces; prints the findings per detector on stderr. With `policy`, its
/// `[redaction]` settings (site patterns, replacement, ...) apply.
pub fn redact(file: Option<&Path>, policy: Option<&Path>) -> anyhow::Result<ExitCode> {
    let redactor = match policy {
        Some(main) => match config::load(main) {
            Ok(p) => p.redaction.redactor,
            Err(diags) => {
                super::print_diagnostics(main, &diags);
                return Ok(ExitCode::FAILURE);
            }
        },
        None => crate::redact::default_redactor(),
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
    let mut write = |(bytes, found): (bytes::Bytes, Vec<crate::redact::Finding>)| {
        for f in found {
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
    }
    write(stream.push(&[], true))?;
    out.flush()?;
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
