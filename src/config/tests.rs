use std::path::PathBuf;
use std::time::Duration;

use http::Method;

use super::*;

fn src(path: &str, text: &str) -> Source {
    Source::policy(PathBuf::from(path), text)
}

fn compile_one(text: &str) -> Result<Policy, Diagnostics> {
    compile(&[src("main.toml", text)])
}

fn errors(text: &str) -> Vec<String> {
    compile_one(text)
        .unwrap_err()
        .0
        .iter()
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn empty_policy_gets_the_documented_defaults() {
    let p = compile_one("").unwrap();
    assert_eq!(p.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(p.server.admin_listen.to_string(), "127.0.0.1:9901");
    assert_eq!(p.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(p.upstream.authority.as_str(), "127.0.0.1:5000");
    assert_eq!(p.limits.max_body, 10 << 20);
    // Unmatched requests pass by default.
    assert_eq!(
        &*p.routes.find(&Method::GET, "/x").unwrap().name,
        "unmatched"
    );
}

#[test]
fn routes_match_in_order_by_method_and_path() {
    let p = compile_one(
        r#"
[[route]]
name = "predict"
path = "/models/{name}/{version}/predict"
methods = ["POST"]
max_body = "1 KiB"
timeout = "3s"

[[route]]
name = "models"
path = "/models/{*rest}"

[unmatched]
action = "deny"
"#,
    )
    .unwrap();
    let r = p
        .routes
        .find(&Method::POST, "/models/delay/2.1.0/predict")
        .unwrap();
    assert_eq!(&*r.name, "predict");
    assert_eq!(r.max_body, 1024);
    assert_eq!(r.timeout, Duration::from_secs(3));
    // Wrong method falls through to the next route that matches.
    let r = p
        .routes
        .find(&Method::GET, "/models/delay/2.1.0/predict")
        .unwrap();
    assert_eq!(&*r.name, "models");
    assert_eq!(r.max_body, 10 << 20);
    assert!(p.routes.find(&Method::GET, "/other").is_none());
}

#[test]
fn unknown_keys_are_errors_with_position() {
    let e = errors("[server]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("main.toml:3:1: unknown field `listne`"),
        "{e:?}"
    );
}

#[test]
fn bad_values_are_reported_at_the_value() {
    let e = errors("[limits]\nmax_body = \"lots\"\n");
    assert!(e[0].starts_with("main.toml:2:12: invalid size"), "{e:?}");
    let e = errors("[upstream]\nurl = \"https://app:5000\"\n");
    assert!(
        e[0].starts_with("main.toml:2:7: upstream.url: https"),
        "{e:?}"
    );
    let e = errors("[server]\nlisten = \"localhost\"\n");
    assert!(e[0].starts_with("main.toml:2:10:"), "{e:?}");
    let e = errors("[logging]\nlevel = \"loud[\"\n");
    assert!(e[0].contains("logging.level"), "{e:?}");
}

#[test]
fn every_route_problem_is_collected() {
    let e = errors(
        r#"
[[route]]
name = "a"
path = "no-slash"
methods = ["POTS"]

[[route]]
name = "a"
path = "/x/{y"
content_types = ["json"]
"#,
    );
    assert_eq!(e.len(), 5, "{e:?}");
    assert!(
        e[0].contains(":4:8: route path must start with '/'"),
        "{e:?}"
    );
    assert!(e[1].contains(":5:12: unknown method"), "{e:?}");
    assert!(
        e[2].contains(":8:8: route name \"a\" is used twice"),
        "{e:?}"
    );
    assert!(e[3].contains(":9:8: invalid route path"), "{e:?}");
    assert!(e[4].contains(":10:18: content type"), "{e:?}");
}

#[test]
fn sections_merge_across_files_but_are_defined_once() {
    let main = src(
        "main.toml",
        "include = [\"routes.toml\"]\n[server]\nlisten = \"127.0.0.1:1\"\n",
    );
    let routes = src("routes.toml", "[[route]]\nname = \"r\"\npath = \"/r\"\n");
    let p = compile(&[main.clone(), routes]).unwrap();
    assert_eq!(&*p.routes.find(&Method::GET, "/r").unwrap().name, "r");
    assert_eq!(p.files.len(), 2);

    let dup = src("routes.toml", "[server]\nlisten = \"127.0.0.1:2\"\n");
    let e = compile(&[main, dup]).unwrap_err().to_string();
    assert_eq!(
        e,
        "routes.toml:1:1: [server] is already defined in main.toml"
    );
}

#[test]
fn diagnostics_never_quote_the_file() {
    // A pasted credential in a broken file must not be echoed back by `check`.
    let e = errors("[upstream]\nurl = \"http://user:AKIAIOSFODNN7EXAMPLE@app:5000\"\n");
    let joined = e.join("\n");
    assert!(!joined.contains("AKIAIOSFODNN7EXAMPLE"), "{joined}");
    let e = errors("password = \"AKIAIOSFODNN7EXAMPLE\" oops");
    assert!(!e.join("\n").contains("AKIAIOSFODNN7EXAMPLE"), "{e:?}");
}

#[test]
fn version_depends_on_content_only() {
    let a = compile_one("[limits]\nmax_body = 5\n").unwrap();
    let b = compile_one("[limits]\nmax_body = 5\n").unwrap();
    let c = compile_one("[limits]\nmax_body = 6\n").unwrap();
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, c.version);
    assert_eq!(a.version.len(), 16);
}

#[test]
fn includes_are_read_relative_to_the_main_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.toml"),
        "include = [\"r.toml\", \"missing.toml\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("r.toml"), "# no routes yet\n").unwrap();
    let e = read_sources(&dir.path().join("main.toml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    let line = e.0[0].to_string();
    assert!(line.contains("main.toml:1:22: cannot open"), "{line}");

    std::fs::write(dir.path().join("main.toml"), "include = [\"r.toml\"]\n").unwrap();
    let s = read_sources(&dir.path().join("main.toml")).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].path, dir.path().join("r.toml"));
}

#[test]
fn an_empty_included_file_is_refused_not_read_as_no_routes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.toml"), "include = [\"r.toml\"]\n").unwrap();
    for empty in ["", "\n  \n"] {
        std::fs::write(dir.path().join("r.toml"), empty).unwrap();
        let e = read_sources(&dir.path().join("main.toml")).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
    }
}

#[test]
fn a_route_needing_credentials_nobody_has_is_an_error() {
    let e =
        compile_one("[[route]]\nname = \"r\"\npath = \"/r\"\nauth = \"api_key\"\n").unwrap_err();
    assert!(e.to_string().contains("needs API keys"), "{e}");
    assert!(e.to_string().contains(":4:8:"), "{e}");
    let e = compile_one("[limits]\nauth = \"api_key\"\n").unwrap_err();
    assert!(e.to_string().contains("auth"), "{e}");
}

#[test]
fn oversized_and_non_utf8_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bin.toml");
    std::fs::write(&p, [0xff, 0xfe, b'a']).unwrap();
    assert!(
        read_policy_file(&p)
            .unwrap_err()
            .message
            .contains("not UTF-8")
    );
    std::fs::write(&p, vec![b'#'; (MAX_POLICY_FILE + 1) as usize]).unwrap();
    assert!(
        read_policy_file(&p)
            .unwrap_err()
            .message
            .contains("larger than 4 MiB")
    );
}

#[test]
fn type_errors_do_not_echo_the_value() {
    let e = errors("[limits]\nmax_inflight = \"AKIAIOSFODNN7EXAMPLE\"\n");
    assert_eq!(
        e,
        vec!["main.toml:2:16: invalid type: string, expected usize".to_string()]
    );
}

#[test]
fn workers_are_bounded_and_restart_only() {
    let e = errors("[server]\nworkers = 0\n");
    assert!(
        e[0].starts_with("main.toml:2:11: server.workers must be between 1 and 256"),
        "{e:?}"
    );
    let a = compile_one("[server]\nworkers = 2\n").unwrap();
    let b = compile_one("[server]\nworkers = 3\n").unwrap();
    assert_eq!(a.server.workers, Some(2));
    assert_eq!(a.restart_required(&b), vec!["server.workers"]);
    assert_eq!(compile_one("").unwrap().server.workers, None);
}

fn with_data(policy: &str, data: &[(&str, &str)]) -> Result<Policy, Diagnostics> {
    let mut sources = vec![src("dir/main.toml", policy)];
    for (path, text) in data {
        sources.push(Source {
            path: PathBuf::from(path),
            text: text.to_string(),
            kind: SourceKind::Data,
        });
    }
    compile(&sources)
}

#[test]
fn fallbacks_compile_from_files_next_to_the_policy() {
    let policy = "[[route]]\nname = \"r\"\npath = \"/r\"\nfallback = { file = \"fb/r.json\", status = 503, on = [\"connect\"] }\n";
    let p = with_data(policy, &[("dir/fb/r.json", "{\"ok\":false}")]).unwrap();
    let r = p.routes.find(&Method::GET, "/r").unwrap();
    let fb = r.fallback.as_ref().unwrap();
    assert!(fb.covers(crate::error::UpstreamFailure::Connect));
    assert!(!fb.covers(crate::error::UpstreamFailure::Timeout));

    let e = with_data(policy, &[("dir/fb/r.json", "{oops")])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("dir/main.toml:4:21: fallback file dir/fb/r.json is not valid JSON (key must be a string at line 1 column 2)"), "{e}");
}

#[test]
fn fallback_and_retry_mistakes_are_reported() {
    let e = errors(
        r#"[[route]]
name = "a"
path = "/a"
fallback = { status = 700, on = ["conect"] }
retry = { attempts = 9, on = ["timeout", 99] }
"#,
    );
    assert_eq!(e.len(), 6, "{e:?}");
    assert!(
        e[0].contains(":4:12: a fallback needs exactly one of `file`"),
        "{e:?}"
    );
    assert!(
        e[1].contains(":4:23: fallback status must be between 100 and 599"),
        "{e:?}"
    );
    assert!(
        e[2].contains(":4:34: unknown failure; use connect, timeout"),
        "{e:?}"
    );
    assert!(e[3].contains(":5:22: retry.attempts"), "{e:?}");
    assert!(
        e[4].contains(":5:31: only `connect` failures and status codes are retried"),
        "{e:?}"
    );
    assert!(
        e[5].contains(":5:42: a status must be between 100 and 599"),
        "{e:?}"
    );
    let e = errors("[[route]]\nname = \"a\"\npath = \"/a\"\nfallback = { body = \"{\" }\n");
    assert!(
        e[0].contains(":4:21: fallback body is not valid JSON"),
        "{e:?}"
    );
}

#[test]
fn circuit_and_retry_budget_defaults() {
    let p = compile_one("").unwrap();
    assert_eq!(p.upstream.circuit.consecutive_failures, 5);
    assert_eq!(p.upstream.circuit.open_for, Duration::from_secs(10));
    assert_eq!(p.upstream.retry_budget.percent, 20.0);
    let p = compile_one("[upstream.circuit]\nconsecutive_failures = 0\n").unwrap();
    assert_eq!(p.upstream.circuit.consecutive_failures, 0);
    let r = compile_one("[[route]]\nname = \"r\"\npath = \"/r\"\nfailure_statuses = [502, 503]\n")
        .unwrap();
    let r = r.routes.find(&Method::GET, "/r").unwrap();
    assert!(r.failure_statuses.contains(503));
    assert!(!r.failure_statuses.contains(500));
}

#[test]
fn resources_default_to_shedding_by_memory_only() {
    let p = compile_one("").unwrap();
    assert_eq!(p.shed.memory_percent, 90.0);
    assert_eq!(p.shed.cpu_percent, 100.0);
    let e = errors("[resources]\nshed_cpu_percent = 120\n");
    assert!(
        e[0].contains(":2:20: resources.shed_cpu_percent must be between 0 and 100"),
        "{e:?}"
    );
}

#[test]
fn the_app_registry_merges_under_the_toml_models() {
    let policy = "[[model]]\nname = \"delay\"\nversion = \"2.1.0\"\nlocked = true\n\n[model_policy]\nregistry_file = \"registry.json\"\n";
    let registry = r#"{"delay": [{"name":"delay","version":"2.1.0","locked":false},
                                 {"name":"delay","version":"2.2.0","locked":true}],
                       "budget": {"name":"budget","version":"1.0.0","locked":true,"inference":false}}"#;
    let p = with_data(policy, &[("dir/registry.json", registry)]).unwrap();
    let versions: Vec<(String, String, bool)> = p
        .models
        .versions()
        .iter()
        .map(|v| (v.name.clone(), v.version.clone(), v.locked))
        .collect();
    assert!(
        versions.contains(&("delay".into(), "2.1.0".into(), true)),
        "the TOML entry wins: {versions:?}"
    );
    assert!(versions.contains(&("delay".into(), "2.2.0".into(), true)));
    assert!(versions.contains(&("budget".into(), "1.0.0".into(), true)));
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].contains("delay@2.1.0: the registry says locked = false"),
        "{:?}",
        p.warnings
    );

    let e = with_data(policy, &[("dir/registry.json", "{\"delay\": 5}")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("dir/registry.json: not a model registry"),
        "{e}"
    );
}

#[test]
fn schema_file_mistakes_are_reported_at_the_key() {
    let route = |extra: &str| {
        format!(
            "[[route]]\nname = \"r\"\npath = \"/r\"\nschema_file = \"s.json\"\n{extra}\n[schema.p]\nrequired = [\"a\"]\n"
        )
    };
    let err = |policy: String, schema: &str| {
        with_data(&policy, &[("dir/s.json", schema)])
            .unwrap_err()
            .to_string()
    };
    let e = err(route(""), "{\"type\": ");
    assert!(
        e.starts_with("dir/main.toml:4:15: dir/s.json is not valid JSON"),
        "{e}"
    );
    let e = err(
        route(""),
        r#"{"type": "text", "minimum": "SECRET-LOOKING"}"#,
    );
    assert!(
        e.starts_with("dir/main.toml:4:15: dir/s.json is not a usable JSON Schema: `"),
        "{e}"
    );
    assert!(!e.contains("SECRET-LOOKING") && !e.contains("text"), "{e}");
    let e = err(route("schema = \"p\""), "{}");
    assert!(
        e.contains("4:15: a route takes `schema` or `schema_file`, not both"),
        "{e}"
    );
    let e = err(route("sanitize = true"), "{}");
    assert!(e.contains("4:15: `sanitize` needs `schema` rules"), "{e}");
    // A remote reference would need the network at every reload: refused.
    let e = err(
        route(""),
        r#"{"$ref": "https://schemas.example.com/project.json"}"#,
    );
    assert!(e.contains("is not a usable JSON Schema"), "{e}");
    assert!(with_data(&route(""), &[("dir/s.json", "{\"type\": \"object\"}")]).is_ok());
}

#[test]
fn keys_that_would_do_nothing_are_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[schema.s.fields.a]\ntype = \"string\"\nmin = 1\n",
            "`min` applies to a number",
        ),
        (
            "[schema.s.fields.a]\ntype = \"integer\"\nmax_len = 3\n",
            "`max_len` applies to a string",
        ),
        (
            "[schema.s.fields.a]\ntype = \"number\"\npattern = \"x\"\n",
            "`pattern` applies to a string",
        ),
        (
            "[schema.s.fields.a]\ntype = \"string\"\nitems = { type = \"string\" }\n",
            "`items` applies to a array",
        ),
        (
            "[schema.s.fields.a]\ntype = \"array\"\nrequired = [\"x\"]\n",
            "`required` applies to a object",
        ),
        (
            "[schema.s.fields.a]\ntype = [\"string\", \"number\"]\ncoerce = true\n",
            "`coerce` needs a number",
        ),
        (
            "[schema.s.fields.a]\nnullable = true\n",
            "`nullable` does nothing",
        ),
        (
            "[[route]]\nname = \"r\"\npath = \"/m/{name}/{version}/predict\"\nmodel = { action = \"inference\", name = \"path:name\", version = \"path:version\", force = \"json:/f\" }\n",
            "`force` is read for action \"retrain\" only",
        ),
        (
            "[[route]]\nname = \"r\"\npath = \"/m/{name}/retrain\"\nmodel = { action = \"retrain\", name = \"path:name\", confirm = \"header:x-confirm\" }\n",
            "`confirm` is read for action \"unlock\" only",
        ),
        (
            "[access]\napi_key_header = \"x-key\"\n",
            "no `api_keys_file` holds any",
        ),
        (
            "[access]\ncors_max_age = \"1h\"\n",
            "`allowed_origins`, which is not set",
        ),
        (
            "[logging]\nmax_files = 3\n",
            "rotate `logging.file`, which is not set",
        ),
        (
            "[logging]\nmax_file_size = \"1 MiB\"\n",
            "rotate `logging.file`, which is not set",
        ),
    ];
    for (text, wanted) in cases {
        let errs = errors(text);
        assert!(errs.iter().any(|e| e.contains(wanted)), "{text}: {errs:?}");
    }
    // The same keys where they do something are accepted.
    compile_one(
        "[schema.s.fields.a]\ntype = [\"integer\", \"string\"]\nmin = 1\nmax_len = 3\nnullable = true\n\
         [schema.s.fields.b]\ntype = \"number\"\ncoerce = true\n\
         [schema.s.fields.c]\nmin = 1\nmin_len = 2\nitems = { type = \"string\" }\n\
         [access]\nallowed_origins = [\"https://a.example\"]\ncors_max_age = \"1h\"\n\
         [logging]\nfile = \"x.log\"\nmax_files = 3\n",
    )
    .unwrap();
}

#[test]
fn entropy_floors_are_set_per_detector_that_has_one() {
    let p = compile_one("[redaction.entropy]\npassword-assignment = 3.5\n").unwrap();
    assert!(
        p.redaction
            .redactor
            .redact(b"password = \"hunter2\"")
            .is_none()
    );
    let errs = errors("[redaction.entropy]\njwt = 2.0\n");
    assert!(
        errs.iter().any(|e| e.contains("has no entropy floor")),
        "{errs:?}"
    );
    let errs = errors("[redaction.entropy]\nsecret-assignment = 9.0\n");
    assert!(errs.iter().any(|e| e.contains("0 to 8")), "{errs:?}");
}
