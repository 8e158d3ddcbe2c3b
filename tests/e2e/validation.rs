//! Request guardrails end to end: a bad body never costs the app a call.

use std::io::Write;

use crate::harness::*;

const ROUTES: &str = r#"
[[route]]
name = "intel"
path = "/echo"
methods = ["POST"]
max_body = "1 MiB"
content_types = ["application/json"]
schema = "project"
sanitize = true

[[route]]
name = "batch"
path = "/headers"
methods = ["POST"]
schema = "project"
batch = { on_invalid = "drop", max_records = 5 }

[schema.project]
required = ["project_id", "budget"]
[schema.project.fields]
project_id = { type = "string", pattern = "^P[0-9]{3,9}$" }
project_name = { type = "string", max_len = 20, trim = true }
budget = { type = "number", min = 0, coerce = true }
"#;

const JSON: (&str, &str) = ("content-type", "application/json");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn valid_bodies_pass_sanitized_with_a_correct_length() {
    let env = Env::start(ROUTES).await;
    let r = send(
        "POST",
        &env.url("/echo"),
        &[JSON],
        r#"{"project_id":"P001","project_name":"  Bridge ","budget":"12.5"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(
        r.body_text(),
        r#"{"project_id":"P001","project_name":"Bridge","budget":12.5}"#
    );
}

#[tokio::test]
async fn bad_bodies_are_refused_before_the_app_with_precise_errors() {
    let env = Env::start(ROUTES).await;
    let before = env.app.requests();
    let cases: Vec<(Vec<u8>, u16, &str, &str)> = vec![
        (
            br#"{"project_id":"X","budget":-1}"#.to_vec(),
            400,
            "VALIDATION_FAILED",
            "/project_id",
        ),
        (
            br#"{"project_id": }"#.to_vec(),
            400,
            "MALFORMED_JSON",
            "line 1 column 16",
        ),
        (
            b"{\"project_id\":\"P001\xff\"}".to_vec(),
            400,
            "MALFORMED_JSON",
            "UTF-8",
        ),
        (
            br#"{"project_id":"P001","budget":1,"budget":2}"#.to_vec(),
            400,
            "MALFORMED_JSON",
            "duplicate key",
        ),
        (
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            400,
            "VALIDATION_FAILED",
            "deeper",
        ),
        (Vec::new(), 400, "MALFORMED_JSON", "EOF"),
    ];
    for (body, status, code, needle) in cases {
        let r = send("POST", &env.url("/echo"), &[JSON], body).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{}",
            r.body_text()
        );
        assert!(
            r.body_text().contains(needle),
            "{needle}: {}",
            r.body_text()
        );
    }
    // Over max_body by Content-Length, and wrong content type.
    let r = send("POST", &env.url("/echo"), &[JSON], vec![b' '; 2 << 20]).await;
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    let r = send(
        "POST",
        &env.url("/echo"),
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(r.code(), "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(env.app.requests(), before, "a refused body reached the app");
}

#[tokio::test]
async fn compressed_bodies_are_decoded_within_the_limit() {
    let env = Env::start(ROUTES).await;
    let body = gzip(br#"{"project_id":"P001","budget":1}"#);
    let r = send(
        "POST",
        &env.url("/echo"),
        &[JSON, ("content-encoding", "gzip")],
        body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["project_id"], "P001");
    // A bomb: 100 MB of zeros in ~100 KB, against a 1 MiB limit.
    let bomb = gzip(&vec![b'0'; 100 << 20]);
    assert!(bomb.len() < 1 << 20);
    let r = send(
        "POST",
        &env.url("/echo"),
        &[JSON, ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(
        r.body_text().contains("decodes to more than"),
        "{}",
        r.body_text()
    );
    let r = send(
        "POST",
        &env.url("/echo"),
        &[JSON, ("content-encoding", "br")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn invalid_records_are_dropped_and_counted_both_ways() {
    let env = Env::start(ROUTES).await;
    let body = r#"[{"project_id":"P001","budget":1},{"project_id":"bad","budget":1},{"project_id":"P003","budget":-2}]"#;
    let r = send("POST", &env.url("/headers"), &[JSON], body).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.header("x-sitegate-dropped"), Some("2"));
    // The app saw the header, and a body of the one valid record.
    assert_eq!(r.json()["x-sitegate-dropped"], "2");
    let len: usize = r.json()["content-length"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, r#"[{"project_id":"P001","budget":1}]"#.len());
    let six = format!("[{}]", [r#"{"project_id":"P001","budget":1}"#; 6].join(","));
    let r = send("POST", &env.url("/headers"), &[JSON], six).await;
    assert_eq!((r.status, r.code().as_str()), (413, "TOO_MANY_RECORDS"));
}

#[tokio::test]
async fn a_json_schema_file_guards_a_route_and_reloads_with_the_policy() {
    let routes = r#"
[[route]]
name = "schema-file"
path = "/echo"
methods = ["POST"]
schema_file = "schemas/project.schema.json"
"#;
    let schema = |min: u32| {
        format!(
            r#"{{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "required": ["project_id"],
               "properties": {{"budget": {{"type": "number", "minimum": {min}}}}}}}"#
        )
    };
    let env =
        Env::start_with_files(routes, "", &[("schemas/project.schema.json", schema(0))]).await;
    let ok = send(
        "POST",
        &env.url("/echo"),
        &[JSON],
        r#"{"project_id":"P1","budget":5}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body_text());
    let before = env.app.requests();
    let bad = send("POST", &env.url("/echo"), &[JSON], r#"{"budget":-5}"#).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.code(), "VALIDATION_FAILED");
    let body: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
    let mut rules: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rule"].as_str().unwrap())
        .collect();
    rules.sort();
    assert_eq!(rules, ["minimum", "required"], "{body}");
    assert_eq!(env.app.requests(), before, "a refused body reached the app");

    // The schema file is part of the policy: an edit reloads it.
    std::fs::write(env.path("schemas/project.schema.json"), schema(10)).unwrap();
    let url = env.url("/echo");
    assert_eventually(
        "the edited schema applies",
        std::time::Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                send("POST", &url, &[JSON], r#"{"project_id":"P1","budget":5}"#)
                    .await
                    .status
                    == 400
            }
        },
    )
    .await;
}
