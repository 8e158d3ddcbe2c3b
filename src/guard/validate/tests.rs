use http::Method;

use super::*;
use crate::config::{Source, compile};

const POLICY: &str = r#"
[[route]]
name = "one"
path = "/one"
schema = "project"
sanitize = true

[[route]]
name = "batch"
path = "/batch"
schema = "project"
batch = { max_records = 3, on_invalid = "reject" }

[[route]]
name = "drop"
path = "/drop"
schema = "project"
batch = { on_invalid = "drop", path = "/records" }

[schema.project]
required = ["project_id", "project_name", "budget", "scheduled_duration_days"]
additional = "allow"
[schema.project.fields]
project_id = { type = "string", pattern = "^P[0-9]{3,9}$" }
project_name = { type = "string", max_len = 200, trim = true }
budget = { type = "number", min = 0, max = 1e12, coerce = true }
scheduled_duration_days = { type = "integer", min = 1, max = 3650 }
phase = { type = "string", enum = ["design", "planning", "construction", "closeout"] }
start_date = { type = "string", format = "date-time" }
tags = { type = "array", max_items = 3, items = { type = "string", max_len = 10 } }
"#;

fn rules(route: &str) -> BodyRules {
    let p = compile(&[Source::policy("m.toml", POLICY)]).unwrap();
    let path = format!("/{route}");
    p.routes
        .find(&Method::POST, &path)
        .unwrap()
        .body
        .clone()
        .unwrap()
}

const GOOD: &str = r#"{"project_id":"P001","project_name":"Bridge","budget":1200000,"scheduled_duration_days":400}"#;

#[test]
fn a_valid_record_is_forwarded_as_sent() {
    let ok = check(GOOD.as_bytes(), &rules("one")).unwrap();
    assert_eq!(
        ok,
        Accepted {
            body: None,
            dropped: 0
        }
    );
}

#[test]
fn every_rule_reports_its_path_and_name() {
    let body = r#"{"project_id":"X1","project_name":5,"budget":-1,"scheduled_duration_days":1.5,
        "phase":"demolition","start_date":"2026-02-30T10:00:00Z","tags":["a","b","c","d"]}"#;
    let e = check(body.as_bytes(), &rules("one")).unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationFailed);
    let got: Vec<(String, String)> = e
        .details
        .iter()
        .map(|d| (d.path.clone(), d.rule.clone()))
        .collect();
    for want in [
        ("/project_id", "pattern"),
        ("/project_name", "type"),
        ("/budget", "min"),
        ("/scheduled_duration_days", "type"),
        ("/phase", "enum"),
        ("/start_date", "format"),
        ("/tags", "max_items"),
    ] {
        assert!(
            got.iter().any(|(p, r)| p == want.0 && r == want.1),
            "{want:?} not in {got:?}"
        );
    }
    let missing = check(br#"{"project_id":"P001"}"#, &rules("one")).unwrap_err();
    assert_eq!(missing.details.len(), 3);
    assert!(missing.details.iter().all(|d| d.rule == "required"));
}

#[test]
fn sanitize_trims_and_coerces_then_reserializes_and_is_idempotent() {
    let body = r#"{"project_id":"P001","project_name":"  Bridge  ","budget":" 1200000 ","scheduled_duration_days":400}"#;
    let r = rules("one");
    let out = check(body.as_bytes(), &r).unwrap().body.unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["project_name"], "Bridge");
    assert_eq!(v["budget"], 1200000);
    // Key order is kept, and a second pass changes nothing.
    assert!(
        String::from_utf8(out.clone())
            .unwrap()
            .starts_with(r#"{"project_id""#)
    );
    assert_eq!(check(&out, &r).unwrap().body, None);
}

#[test]
fn batches_reject_listing_every_invalid_record_or_drop_them() {
    let bad =
        r#"{"project_id":"P002","project_name":"x","budget":-5,"scheduled_duration_days":10}"#;
    let body = format!("[{GOOD},{bad},{bad}]");
    let e = check(body.as_bytes(), &rules("batch")).unwrap_err();
    assert_eq!(e.message, "2 of 3 records are invalid");
    assert_eq!(
        e.details.iter().map(|d| d.record).collect::<Vec<_>>(),
        vec![Some(1), Some(2)]
    );

    let too_many = format!("[{GOOD},{GOOD},{GOOD},{GOOD}]");
    assert_eq!(
        check(too_many.as_bytes(), &rules("batch"))
            .unwrap_err()
            .code,
        ErrorCode::TooManyRecords
    );

    let body = format!(r#"{{"source":"site","records":[{GOOD},{bad}]}}"#);
    let ok = check(body.as_bytes(), &rules("drop")).unwrap();
    assert_eq!(ok.dropped, 1);
    let v: Value = serde_json::from_slice(&ok.body.unwrap()).unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
    assert_eq!(v["source"], "site");
    let all_bad = format!(r#"{{"records":[{bad}]}}"#);
    assert_eq!(
        check(all_bad.as_bytes(), &rules("drop"))
            .unwrap_err()
            .message,
        "all 1 records are invalid"
    );
}

#[test]
fn hostile_bodies_get_precise_errors() {
    let r = rules("one");
    let e = check(b"{\"project_id\": }", &r).unwrap_err();
    assert_eq!(e.code, ErrorCode::MalformedJson);
    assert!(e.message.contains("line 1 column 16"), "{}", e.message);
    let e = check(b"{\"a\": \"\xff\"}", &r).unwrap_err();
    assert!(e.message.contains("not valid UTF-8"), "{}", e.message);
    let e = check(br#"{"budget": 1, "budget": -1}"#, &r).unwrap_err();
    assert_eq!(e.code, ErrorCode::MalformedJson);
    assert!(
        e.message.contains("duplicate key `budget`"),
        "{}",
        e.message
    );
    // 100 000 levels: refused at max_depth, without exhausting the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = check(deep.as_bytes(), &r).unwrap_err();
    assert_eq!(e.details[0].rule, "max_depth");
    let long = format!(r#"{{"project_name":"{}"}}"#, "x".repeat(1001));
    assert_eq!(
        check(long.as_bytes(), &r).unwrap_err().details[0].rule,
        "max_string"
    );
    assert_eq!(
        check(b"42", &r).unwrap_err().code,
        ErrorCode::ValidationFailed
    );
}

#[test]
fn formats() {
    for ok in [
        "2026-11-28T00:37:39Z",
        "2026-11-28T00:37:39.123+01:00",
        "2024-02-29 10:00:00z",
    ] {
        assert!(format_ok(Format::DateTime, ok), "{ok}");
    }
    for bad in [
        "2026-11-28",
        "2026-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2026-11-28T25:00:00Z",
        "2026-11-28T00:00:00",
    ] {
        assert!(!format_ok(Format::DateTime, bad), "{bad}");
    }
    // Found by fuzzing: a multi-byte character where the date ends must not panic.
    assert!(!format_ok(Format::DateTime, "2026-03-0\u{2eb}08:z00:00Z"));
    assert!(!format_ok(Format::DateTime, "2026-03-01\u{2eb}08:00:00Z"));
    assert!(format_ok(Format::Date, "2026-11-28"));
    assert!(!format_ok(Format::Date, "28/11/2026"));
    assert!(format_ok(Format::Email, "ops@suite.example.com"));
    assert!(!format_ok(Format::Email, "ops@localhost"));
    assert!(format_ok(
        Format::Uuid,
        "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    ));
    assert!(!format_ok(
        Format::Uuid,
        "3fa85f64571745 62b3fc2c963f66afa6"
    ));
}

#[test]
fn schema_mistakes_are_reported_with_positions() {
    let e = compile(&[Source::policy(
        "m.toml",
        "[[route]]\nname = \"r\"\npath = \"/r\"\nschema = \"nope\"\n\n[schema.s.fields]\na = { type = \"text\", format = \"time\", pattern = \"(\" }\n",
    )])
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("m.toml:4:10: no [schema.nope] is defined"),
        "{e}"
    );
    assert!(e.contains("m.toml:7:14: unknown type"), "{e}");
    assert!(e.contains("m.toml:7:31: unknown format"), "{e}");
    assert!(e.contains("m.toml:7:49: invalid pattern"), "{e}");
}

/// A route checked against a JSON Schema file, compiled as `check` would.
fn json_schema_rules(schema: &str, route_extra: &str) -> BodyRules {
    use crate::config::SourceKind;
    let policy = format!(
        "[[route]]\nname = \"r\"\npath = \"/r\"\nschema_file = \"r.schema.json\"\n{route_extra}\n"
    );
    let p = compile(&[
        Source::policy("m.toml", policy),
        Source {
            path: "r.schema.json".into(),
            text: schema.to_string(),
            kind: SourceKind::Data,
        },
    ])
    .unwrap();
    p.routes
        .find(&Method::POST, "/r")
        .unwrap()
        .body
        .clone()
        .unwrap()
}

const PROJECT_2020: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["project_id", "budget"],
  "properties": {
    "project_id": {"type": "string", "pattern": "^P[0-9]{3,9}$"},
    "budget": {"type": "number", "minimum": 0},
    "start_date": {"type": "string", "format": "date-time"},
    "tags": {"type": "array", "prefixItems": [{"const": "first"}]}
  }
}"#;

const PROJECT_DRAFT7: &str = r##"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["project_id"],
  "properties": {
    "project_id": {"type": "string"},
    "tags": {"type": "array", "items": [{"const": "first"}], "additionalItems": false}
  },
  "definitions": {"positive": {"type": "number", "exclusiveMinimum": 0}},
  "additionalProperties": {"$ref": "#/definitions/positive"}
}"##;

#[test]
fn a_json_schema_file_checks_records_with_the_same_error_shape() {
    let rules = json_schema_rules(PROJECT_2020, "");
    assert_eq!(
        check(br#"{"project_id":"P001","budget":5,"start_date":"2026-11-28T08:00:00Z","tags":["first"]}"#, &rules),
        Ok(Accepted { body: None, dropped: 0 })
    );
    let e = check(
        br#"{"project_id":"AKIAIOSFODNN7EXAMPLE","budget":-1,"start_date":"yesterday","tags":["second"]}"#,
        &rules,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::ValidationFailed);
    let mut got: Vec<(String, String)> = e
        .details
        .iter()
        .map(|d| (d.path.clone(), d.rule.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/budget", "minimum"),
            ("/project_id", "pattern"),
            ("/start_date", "format"),
            ("/tags/0", "const"),
        ]
        .map(|(p, r)| (p.to_string(), r.to_string()))
    );
    // The values are masked: a rejected value may be a secret in the wrong field.
    for d in &e.details {
        assert!(
            !d.message.contains("AKIA") && !d.message.contains("yesterday"),
            "{d:?}"
        );
    }
    let missing = check(br#"{"budget":1}"#, &rules).unwrap_err();
    assert_eq!(missing.details[0].rule, "required");
    assert_eq!(missing.details[0].path, "");
}

#[test]
fn draft_7_schemas_and_batches_work_too() {
    let rules = json_schema_rules(
        PROJECT_DRAFT7,
        "batch = { on_invalid = \"drop\", path = \"/records\" }",
    );
    let body = br#"{"records":[{"project_id":"P1","extra":2,"tags":["first"]},{"project_id":"P2","extra":0},{"tags":["first","second"]}]}"#;
    let accepted = check(body, &rules).unwrap();
    assert_eq!(accepted.dropped, 2);
    let forwarded: Value = serde_json::from_slice(&accepted.body.unwrap()).unwrap();
    assert_eq!(
        forwarded,
        serde_json::json!({"records":[{"project_id":"P1","extra":2,"tags":["first"]}]})
    );
    let reject = json_schema_rules(PROJECT_DRAFT7, "batch = { on_invalid = \"reject\" }");
    let e = check(br#"[{"project_id":"P1"},{"project_id":7}]"#, &reject).unwrap_err();
    assert_eq!(e.details.len(), 1);
    assert_eq!(e.details[0].record, Some(1));
    assert_eq!(e.details[0].path, "/project_id");
    assert_eq!(e.details[0].rule, "type");
}

/// A record built from pieces that are valid, invalid, in need of cleaning, or
/// hostile (duplicate keys, unknown fields, deep nesting).
fn random_record(rng: &mut fastrand::Rng) -> String {
    let pick = |rng: &mut fastrand::Rng, options: &[&str]| {
        // Mostly valid as sent (the first), often valid once cleaned (the second where
        // there is one), sometimes anything.
        let i = match rng.u8(..10) {
            0..=6 => 0,
            7 | 8 => 1.min(options.len() - 1),
            _ => rng.usize(..options.len()),
        };
        options[i].to_string()
    };
    let mut fields = Vec::new();
    if rng.u8(..10) > 0 {
        fields.push(format!(
            "\"project_id\":{}",
            pick(rng, &["\"P001\"", "\"P12\"", "\"X001\"", "7", "null"])
        ));
    }
    if rng.u8(..10) > 0 {
        fields.push(format!("\"project_name\":{}", pick(rng, &["\"Bridge\"", "\" Bridge \"", "\"\"", "\"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ\"", "\"\\u0042ridge\"", "3"])));
    }
    if rng.u8(..10) > 0 {
        fields.push(format!(
            "\"budget\":{}",
            pick(
                rng,
                &[
                    "12.5",
                    "\" 12 \"",
                    "0",
                    "-1",
                    "\"12\"",
                    "1e13",
                    "true",
                    "10000000000000000000"
                ]
            )
        ));
    }
    if rng.u8(..10) > 0 {
        fields.push(format!(
            "\"scheduled_duration_days\":{}",
            pick(rng, &["30", "30.0", "30.5", "0", "\"30\"", "3651"])
        ));
    }
    if rng.bool() {
        fields.push(format!(
            "\"phase\":{}",
            pick(rng, &["\"design\"", "\"demolition\"", "\"Design\""])
        ));
    }
    if rng.bool() {
        fields.push(format!(
            "\"start_date\":{}",
            pick(
                rng,
                &[
                    "\"2026-11-28T08:00:00Z\"",
                    "\"2026-02-30T08:00:00Z\"",
                    "\"2026-11-28\""
                ]
            )
        ));
    }
    if rng.bool() {
        fields.push(format!(
            "\"tags\":{}",
            pick(
                rng,
                &[
                    "[]",
                    "[\"a\",\"b\"]",
                    "[\"a\",\"b\",\"c\",\"d\"]",
                    "[\"abcdefghijk\"]",
                    "[1]",
                    "\"a\""
                ]
            )
        ));
    }
    if rng.u8(..4) == 0 {
        fields.push(format!("\"extra\":{}", pick(rng, &["1", "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":1}}}}}}}}}}", "{\"k\":1,\"k\":2}", "[[[]]]"])));
    }
    if rng.u8(..20) == 0 {
        fields.push("\"budget\":1".to_string());
    }
    rng.shuffle(&mut fields);
    format!("{{{}}}", fields.join(","))
}

#[test]
fn the_fast_path_forwards_exactly_what_the_full_check_would() {
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut as_sent, mut cleaned, mut left) = (0, 0, 0);
    for route in ["one", "batch", "drop"] {
        let mut rules = rules(route);
        for _ in 0..3000 {
            // With and without sanitizing, whatever the route says.
            rules.sanitize = rng.bool();
            let n = rng.usize(1..4);
            let records: Vec<String> = (0..n).map(|_| random_record(&mut rng)).collect();
            let body = match route {
                "one" => records[0].clone(),
                "batch" => format!("[{}]", records.join(",")),
                _ => format!(
                    "{{\"meta\":{{\"by\":\"ops\",\"n\":[1.5,-0.0,true,null]}},\"records\":[{}]}}",
                    records.join(",")
                ),
            };
            let full = check_full(body.as_bytes(), &rules);
            match fast_path(body.as_bytes(), &rules) {
                Some(fast) => {
                    if fast.body.is_some() {
                        cleaned += 1;
                    } else {
                        as_sent += 1;
                    }
                    assert_eq!(Ok(fast), full, "the fast path on {route}: {body}");
                }
                None => {
                    left += 1;
                    // Whatever the fast path leaves, the full check judges; a body it
                    // could have passed would only cost time, but is a regression.
                    if let Ok(a) = &full {
                        assert!(
                            a.dropped > 0,
                            "the fast path left a valid body on {route}: {body}"
                        );
                    }
                }
            }
        }
    }
    // Every branch is exercised, or the test proves nothing.
    assert!(
        as_sent > 300 && cleaned > 300 && left > 300,
        "as sent {as_sent}, cleaned {cleaned}, left {left}"
    );
}
