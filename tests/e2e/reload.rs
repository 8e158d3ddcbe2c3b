//! Hot reload: every way a policy file changes, broken files, snapshots per request.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(10);

fn routes(max_body: u64) -> String {
    format!("[[route]]\nname = \"echo\"\npath = \"/echo\"\nmax_body = {max_body}\n")
}

/// True once a 50-byte POST to /echo is refused with 413.
async fn limit_applies(env_url: String) -> bool {
    send("POST", &env_url, &[], vec![b'x'; 50]).await.status == 413
}

async fn wait_for_limit(env: &Env) {
    let url = env.url("/echo");
    assert_eventually("the new max_body applies", WAIT, || {
        limit_applies(url.clone())
    })
    .await;
}

#[tokio::test]
async fn an_in_place_write_is_picked_up() {
    let env = Env::start(&routes(1000)).await;
    assert_eq!(
        send("POST", &env.url("/echo"), &[], vec![b'x'; 50])
            .await
            .status,
        200
    );
    let old = env.proxy.shared.policy().version.clone();
    std::fs::write(env.path("routes.toml"), routes(10)).unwrap();
    wait_for_limit(&env).await;
    let c = get(&env.admin("/config")).await.json();
    assert_ne!(c["version"], old.as_str());
    assert_eq!(c["last_reload"]["result"], "ok");
    let m = get(&env.admin("/metrics")).await.body_text();
    assert!(
        metric(&m, "sitegate_config_reloads_total{result=\"ok\"}") >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_rename_into_place_save_is_picked_up() {
    let env = Env::start(&routes(1000)).await;
    // What vim and most editors do: write a new file, rename it over the old one.
    let tmp = env.path(".routes.toml.swp");
    std::fs::write(&tmp, routes(10)).unwrap();
    std::fs::rename(&tmp, env.path("routes.toml")).unwrap();
    wait_for_limit(&env).await;
}

/// Lays out a directory the way the kubelet mounts a ConfigMap: the files are symlinks
/// through `..data`, itself a symlink to a timestamped directory.
fn configmap_version(root: &Path, stamp: &str, files: &[(&str, String)]) {
    let dir = root.join(stamp);
    std::fs::create_dir(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let tmp = root.join("..data_tmp");
    std::os::unix::fs::symlink(stamp, &tmp).unwrap();
    // The atomic swap: rename the new link over ..data.
    std::fs::rename(&tmp, root.join("..data")).unwrap();
    for (name, _) in files {
        let link = root.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    let app = sitegate::demo::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main_text = main_toml(&app.addr.to_string(), "");
    configmap_version(
        dir.path(),
        "..2026_11_28_00_00_00.1",
        &[
            ("sitegate.toml", main_text.clone()),
            ("routes.toml", routes(1000)),
        ],
    );
    let proxy = start_proxy(&dir.path().join("sitegate.toml"), Default::default()).await;
    let url = format!("http://{}/echo", proxy.addr);
    assert_eq!(send("POST", &url, &[], vec![b'x'; 50]).await.status, 200);
    configmap_version(
        dir.path(),
        "..2026_11_28_00_01_00.2",
        &[("sitegate.toml", main_text), ("routes.toml", routes(10))],
    );
    std::fs::remove_dir_all(dir.path().join("..2026_11_28_00_00_00.1")).unwrap();
    assert_eventually("the ConfigMap swap applies", WAIT, || {
        limit_applies(url.clone())
    })
    .await;
}

#[tokio::test]
async fn a_broken_file_keeps_the_old_policy_and_says_where() {
    let env = Env::start(&routes(10)).await;
    let old = env.proxy.shared.policy().version.clone();
    std::fs::write(
        env.path("routes.toml"),
        "[[route]]\nname = \"echo\"\npath = \"/echo\"\nmax_body = \"lots\"\n",
    )
    .unwrap();
    let admin = env.admin("/config");
    assert_eventually("the reload error is reported", WAIT, || {
        let admin = admin.clone();
        async move { get(&admin).await.json()["last_reload"]["result"] == "error" }
    })
    .await;
    let c = get(&env.admin("/config")).await.json();
    assert_eq!(c["version"], old.as_str(), "a broken policy was swapped in");
    let err = c["last_reload"]["errors"][0].as_str().unwrap();
    assert!(err.ends_with("routes.toml:4:12: invalid size (invalid digit found in string); write bytes as an integer or a string like \"512 KiB\" or \"10 MiB\""), "{err}");
    // The old policy still serves.
    assert_eq!(
        send("POST", &env.url("/echo"), &[], vec![b'x'; 50])
            .await
            .status,
        413
    );
    let m = get(&env.admin("/metrics")).await.body_text();
    assert_eq!(
        metric(&m, "sitegate_config_reloads_total{result=\"error\"}"),
        1.0,
        "{m}"
    );

    // An explicit reload reports the same problem with 422.
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["result"], "error");

    // Fixing the file applies the fix.
    std::fs::write(env.path("routes.toml"), routes(1000)).unwrap();
    let url = env.url("/echo");
    assert_eventually("the fixed policy applies", WAIT, || {
        let url = url.clone();
        async move { send("POST", &url, &[], vec![b'x'; 50]).await.status == 200 }
    })
    .await;
}

#[tokio::test]
async fn a_missing_include_is_an_error_not_a_half_policy() {
    let env = Env::start(&routes(10)).await;
    std::fs::remove_file(env.path("routes.toml")).unwrap();
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert_eq!(r.status, 422);
    let err = r.json()["errors"][0].as_str().unwrap().to_string();
    assert!(err.contains("sitegate.toml:1:12: cannot open"), "{err}");
    assert_eq!(
        send("POST", &env.url("/echo"), &[], vec![b'x'; 50])
            .await
            .status,
        413
    );
}

#[tokio::test]
async fn admin_reload_answers_unchanged_when_nothing_changed() {
    let env = Env::start(&routes(10)).await;
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["result"], "unchanged");
    assert_eq!(get(&env.admin("/reload")).await.status, 405);
}

#[tokio::test]
async fn in_flight_requests_keep_the_policy_they_started_with() {
    let slow = |timeout: &str| {
        format!("[[route]]\nname = \"slow\"\npath = \"/api/slow\"\ntimeout = \"{timeout}\"\n")
    };
    let env = Env::start(&slow("5s")).await;
    let url = env.url("/api/slow?ms=800");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let shared = env.proxy.shared.clone();
    assert_eventually("the request is in flight", WAIT, || {
        let n = shared.inflight.load(std::sync::atomic::Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
    std::fs::write(env.path("routes.toml"), slow("100ms")).unwrap();
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert!(r.status == 200, "{}", r.body_text());
    assert_eventually("the new timeout applies", WAIT, || {
        let shared = env.proxy.shared.clone();
        async move {
            shared.policy().routes.iter().next().unwrap().timeout == Duration::from_millis(100)
        }
    })
    .await;
    // Started under the 5 s timeout, it finishes under it.
    assert_eq!(in_flight.await.unwrap().status, 200);
    // A new request gets the 100 ms timeout.
    assert_eq!(get(&env.url("/api/slow?ms=800")).await.status, 504);
}

#[tokio::test]
async fn settings_that_need_a_restart_are_reported_not_applied() {
    let env = Env::start(&routes(10)).await;
    let text = std::fs::read_to_string(env.path("sitegate.toml")).unwrap();
    std::fs::write(
        env.path("sitegate.toml"),
        text.replace("\nlisten = \"127.0.0.1:0\"", "\nlisten = \"127.0.0.1:1\""),
    )
    .unwrap();
    let admin = env.admin("/config");
    assert_eventually("the restart-only change is reported", WAIT, || {
        let admin = admin.clone();
        async move {
            get(&admin).await.json()["restart_required"] == serde_json::json!(["server.listen"])
        }
    })
    .await;
    // Still serving on the bound address.
    assert_eq!(get(&env.url("/health")).await.status, 200);
}
