//! The model-lock policy through the proxy, with the shipped policy.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

/// The shipped config/ copied to a temp dir (so a test may edit it), in front of the
/// stand-in app.
async fn shipped() -> (
    tempfile::TempDir,
    sitegate::demo::StandIn,
    sitegate::server::Running,
) {
    let app = sitegate::demo::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    std::fs::create_dir(dir.path().join("fallbacks")).unwrap();
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        std::fs::copy(&entry, dir.path().join(rel)).unwrap();
    }
    let overrides = sitegate::state::Overrides {
        upstream: Some(app.addr.to_string().parse().unwrap()),
        listen: Some(([127, 0, 0, 1], 0).into()),
        admin_listen: Some(([127, 0, 0, 1], 0).into()),
    };
    let proxy = start_proxy(&dir.path().join("sitegate.toml"), overrides).await;
    (dir, app, proxy)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn inference_runs_only_on_registered_locked_versions() {
    let (_dir, app, proxy) = shipped().await;
    let url = |p: &str| format!("http://{}{p}", proxy.addr);
    let r = send(
        "POST",
        &url("/models/delay-predictor/2.1.0/predict"),
        &[JSON],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let before = app.requests();
    for (path, status, code) in [
        ("/models/no-such-model/1.0.0/predict", 409, "MODEL_UNKNOWN"),
        (
            "/models/delay-predictor/9.9.9/predict",
            409,
            "MODEL_UNKNOWN",
        ),
        (
            "/models/risk-classifier/0.9.0/predict",
            409,
            "MODEL_NOT_LOCKED",
        ),
    ] {
        let r = send("POST", &url(path), &[JSON], "{}").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{path}: {}",
            r.body_text()
        );
    }
    assert_eq!(
        app.requests(),
        before,
        "a refused model call reached the app"
    );
    // No version: the latest locked one is chosen and told to the app.
    let r = send(
        "POST",
        &url("/models/delay-predictor/predict"),
        &[JSON],
        "{}",
    )
    .await;
    assert_eq!(r.json()["version"], "2.1.0");
    let m = get(&format!("http://{}/metrics", proxy.admin_addr))
        .await
        .body_text();
    assert_eq!(
        metric(
            &m,
            "sitegate_model_decisions_total{model=\"unregistered\",action=\"inference\",result=\"denied\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn retraining_needs_the_force_flag_to_be_literally_true() {
    let (_dir, _app, proxy) = shipped().await;
    let url = format!("http://{}/models/delay-predictor/retrain", proxy.addr);
    for body in [
        "{}",
        r#"{"force_retrain":"true"}"#,
        r#"{"force_retrain":1}"#,
    ] {
        let r = send("POST", &url, &[JSON], body).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (428, "RETRAIN_NOT_CONFIRMED"),
            "{body}"
        );
    }
    let r = send(
        "POST",
        &url,
        &[JSON],
        r#"{"force_retrain":true,"epochs":3}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body_text());
}

#[tokio::test]
async fn locking_a_model_in_models_toml_applies_to_the_next_request() {
    let (dir, _app, proxy) = shipped().await;
    let url = format!("http://{}/models/risk-classifier/0.9.0/predict", proxy.addr);
    assert_eq!(send("POST", &url, &[JSON], "{}").await.status, 409);
    let models = std::fs::read_to_string(dir.path().join("models.toml")).unwrap();
    let locked = models.replace(
        "locked = false          # still being evaluated",
        "locked = true  # evaluated",
    );
    assert_ne!(locked, models);
    std::fs::write(dir.path().join("models.toml"), locked).unwrap();
    assert_eventually("the locked model serves", Duration::from_secs(10), || {
        let url = url.clone();
        async move { send("POST", &url, &[JSON], "{}").await.status == 200 }
    })
    .await;
}
