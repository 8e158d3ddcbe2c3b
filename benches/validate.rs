//! The request guard on a 10 000-record batch of the `project` schema (valid as sent,
//! with every record to sanitize, and with its last record invalid), and on a 2 KB
//! single record:
//! `cargo bench --bench validate`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use sitegate::config::{Source, compile};
use sitegate::guard::validate;

fn rules() -> sitegate::guard::validate::schema::BodyRules {
    let text = std::fs::read_to_string("config/routes.toml").expect("run from the repository root");
    let p = compile(&[Source::policy("config/routes.toml", text)]).expect("shipped routes compile");
    let route = p
        .routes
        .find(&Method::POST, "/api/phase9/intelligence")
        .expect("phase 9 route");
    route.body.clone().expect("phase 9 validates")
}

fn record(i: usize) -> String {
    format!(
        r#"{{"project_id":"P{i:06}","project_name":"Riverside tower block {i}","budget":{},"scheduled_duration_days":{},"actual_spend":{},"delay_days":{},"phase":"construction","status":"active","start_date":"2026-03-01T08:00:00Z","tags":["residential","concrete","phase-2"],"notes":"{}"}}"#,
        1_000_000 + i * 13,
        100 + i % 900,
        500_000 + i * 7,
        i % 30,
        "site inspection passed; crane booked; ".repeat(12)
    )
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    let batch = format!(
        "[{}]",
        (0..10_000).map(record).collect::<Vec<_>>().join(",")
    );
    let single = record(1);
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function(
        format!("10 000 records, {:.1} MB", batch.len() as f64 / 1e6),
        |b| b.iter(|| black_box(validate::check(black_box(batch.as_bytes()), &rules))),
    );
    // Every record needs cleaning (a name to trim): the full check builds the tree,
    // sanitizes and re-serializes.
    let dirty = batch.replace("\"Riverside tower block", "\" Riverside tower block");
    g.bench_function("10 000 records, each to sanitize", |b| {
        b.iter(|| black_box(validate::check(black_box(dirty.as_bytes()), &rules)))
    });
    // The last record breaks a rule: the fast path gives up at the end, and the full
    // check builds the tree and lists the problem.
    let invalid = batch.replacen("\"P009999\"", "\"X009999\"", 1);
    assert_ne!(invalid, batch);
    g.bench_function("10 000 records, the last invalid", |b| {
        b.iter(|| black_box(validate::check(black_box(invalid.as_bytes()), &rules)))
    });
    g.bench_function("syntax only (serde IgnoredAny), same bytes", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(
                batch.as_bytes(),
            )))
        })
    });
    g.throughput(Throughput::Bytes(single.len() as u64));
    g.bench_function(format!("one record, {} bytes", single.len()), |b| {
        b.iter(|| black_box(validate::check(black_box(single.as_bytes()), &rules)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
