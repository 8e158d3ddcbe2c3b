//! Every input kept under fuzz/regressions/<target>/ (seeds, and whatever a fuzzing run
//! found worth keeping) replayed through the fuzz targets' own checks.

use std::path::Path;

#[path = "../../fuzz/checks.rs"]
mod checks;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails its check", path.display());
        n += 1;
    }
    assert!(n > 0, "no inputs under {}", dir.display());
}

#[test]
fn validate_inputs() {
    replay("validate", checks::validate);
}

#[test]
fn redact_stream_inputs() {
    replay("redact_stream", checks::redact_stream);
}

#[test]
fn policy_inputs() {
    replay("policy", checks::policy);
}

#[test]
fn gzip_inputs() {
    replay("gzip", checks::gzip);
}
