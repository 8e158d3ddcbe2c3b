//! Redaction throughput with the full built-in detector set:
//! `cargo bench --bench redact`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sitegate::redact::stream::Redacting;
use sitegate::redact::{RedactionSettings, Redactor};

/// 10 MiB of ordinary English-like text with no secret.
fn clean_text() -> Vec<u8> {
    let words = [
        "the", "site", "crew", "poured", "concrete", "for", "level", "three", "and", "schedule",
        "slipped", "two", "days", "because", "of", "rain", "budget", "remains", "within", "plan",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut out = Vec::with_capacity(10 << 20);
    while out.len() < 10 << 20 {
        out.extend_from_slice(words[rng.usize(0..words.len())].as_bytes());
        out.push(if rng.u8(0..12) == 0 { b'\n' } else { b' ' });
    }
    out
}

/// 10 MiB of JSON records with one AWS example key every 64 KiB.
fn json_with_secrets() -> Vec<u8> {
    let mut out = Vec::with_capacity(10 << 20);
    let mut next_secret = 64 * 1024;
    let mut i = 0u64;
    out.push(b'[');
    while out.len() < 10 << 20 {
        let record = format!(
            r#"{{"project_id":"P{i:06}","project_name":"Bridge {i}","budget":{},"phase":"construction","status":"active"}},"#,
            1000 + i * 7
        );
        out.extend_from_slice(record.as_bytes());
        if out.len() >= next_secret {
            out.extend_from_slice(br#"{"debug":"AKIAIOSFODNN7EXAMPLE"},"#);
            next_secret += 64 * 1024;
        }
        i += 1;
    }
    out.push(b']');
    out
}

fn bench(c: &mut Criterion) {
    let r = Arc::new(Redactor::new(&RedactionSettings::default()).unwrap());
    let text = clean_text();
    let json = json_with_secrets();
    let mut g = c.benchmark_group("redact");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("clean text 10 MiB, whole", |b| {
        b.iter(|| black_box(r.redact(black_box(&text))))
    });
    g.bench_function("clean text 10 MiB, streamed 64 KiB", |b| {
        b.iter(|| {
            let mut s = Redacting::new(r.clone());
            for chunk in text.chunks(64 * 1024) {
                black_box(s.push(chunk, false));
            }
            black_box(s.push(&[], true))
        })
    });
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("JSON 10 MiB, a secret per 64 KiB, whole", |b| {
        b.iter(|| black_box(r.redact(black_box(&json))))
    });
    g.finish();
    // Each detector's keyword repeated back to back, 1 MiB each: the cost per byte
    // must stay within a small factor of clean text (a search per keyword hit over
    // the detector's whole window made `eyJ` quadratic: 20 s per MiB).
    let mut g = c.benchmark_group("redact-adversarial");
    let mut units: Vec<String> = sitegate::redact::detectors::BUILTINS
        .iter()
        .flat_map(|b| b.keywords.iter().map(|k| k.to_string()))
        .collect();
    units.extend([
        "password=".into(),
        "eyJa.".into(),
        "AKIA".into(),
        "\"token\":\"".into(),
    ]);
    units.sort();
    units.dedup();
    for unit in units {
        let text = unit.repeat((1 << 20) / unit.len()).into_bytes();
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("{unit:?} repeated, 1 MiB"), |b| {
            b.iter(|| black_box(r.redact(black_box(&text))))
        });
    }
    g.finish();
    let small = br#"{"project_id":"P001","risk_score":0.37,"delay_risk":"medium","recommendations":["add a buffer to the concrete pour schedule","review subcontractor capacity"],"phase":9,"model":"delay-predictor@2.1.0","generated_at":"2026-11-28T00:00:00Z","confidence":0.81,"site":"north yard","weather":"rain","crew":"concrete team B-12"}"#;
    let mut g = c.benchmark_group("redact-small");
    g.bench_function(format!("clean JSON response, {} bytes", small.len()), |b| {
        b.iter(|| black_box(r.redact(black_box(small))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
