//! The reusable harness: a proxy and an upstream on port 0, config in a temp dir,
//! readiness by the bound address being returned, `assert_eventually` for reloads.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sitegate::body::{BoxBody, full};
use sitegate::demo::StandIn;
use sitegate::server::{Options, Running};
use sitegate::state::Overrides;

/// A proxy in front of the stand-in app, with its policy in a temp dir.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub app: StandIn,
    pub proxy: Running,
}

/// The main policy file for tests: everything on port 0, the upstream given.
pub fn main_toml(upstream: &str, extra: &str) -> String {
    format!(
        r#"include = ["routes.toml"]

[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"

[upstream]
url = "http://{upstream}"
connect_timeout = "1s"
timeout = "5s"
{extra}
"#
    )
}

impl Env {
    /// Starts the stand-in and a proxy with `routes` as routes.toml.
    pub async fn start(routes: &str) -> Env {
        Env::start_with(routes, "").await
    }

    /// Same, with the main file rewritten by `edit`.
    pub async fn start_with_main(edit: impl FnOnce(String) -> String) -> Env {
        Env::build("", |addr| edit(main_toml(addr, "")), &[]).await
    }

    /// Same, with `extra` appended to the main file (e.g. a `[limits]` section).
    pub async fn start_with(routes: &str, extra: &str) -> Env {
        Env::build(routes, |addr| main_toml(addr, extra), &[]).await
    }

    /// Same, with more files (key files, fallback bodies, ...) written beside the
    /// policy before it loads, since the policy names them.
    pub async fn start_with_files(routes: &str, extra: &str, files: &[(&str, String)]) -> Env {
        Env::build(routes, |addr| main_toml(addr, extra), files).await
    }

    async fn build(
        routes: &str,
        main: impl FnOnce(&str) -> String,
        files: &[(&str, String)],
    ) -> Env {
        let app = sitegate::demo::start(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(path, text).unwrap();
        }
        std::fs::write(
            dir.path().join("sitegate.toml"),
            main(&app.addr.to_string()),
        )
        .unwrap();
        std::fs::write(dir.path().join("routes.toml"), routes_file(routes)).unwrap();
        let proxy = start_proxy(&dir.path().join("sitegate.toml"), Overrides::default()).await;
        Env { dir, app, proxy }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.addr, path)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.admin_addr, path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A routes file's text: an empty policy file is refused, so a test without routes
/// says so in a comment.
pub fn routes_file(routes: &str) -> String {
    if routes.trim().is_empty() {
        "# this test has no routes\n".to_string()
    } else {
        routes.to_string()
    }
}

/// Starts a proxy on the policy at `main`.
pub async fn start_proxy(main: &Path, overrides: Overrides) -> Running {
    let policy =
        sitegate::config::load(main).unwrap_or_else(|d| panic!("test policy invalid:\n{d}"));
    sitegate::server::start(
        policy,
        Options {
            config: main.to_path_buf(),
            overrides,
            set_log_level: None,
        },
    )
    .await
    .unwrap()
}

/// A response read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.code` of a sitegate error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

pub fn client() -> Client<HttpConnector, BoxBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request with a whole body.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    send_body(&client(), method, url, headers, full(body.into())).await
}

pub async fn get(url: &str) -> Resp {
    send("GET", url, &[], Bytes::new()).await
}

/// Sends a request with any body over `client`.
pub async fn send_body(
    client: &Client<HttpConnector, BoxBody>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: BoxBody,
) -> Resp {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(body).unwrap())
        .await
        .unwrap_or_else(|e| panic!("request failed: {e:?}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body failed")
        .to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// Retries `check` until it returns true, or fails after `within`.
pub async fn assert_eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("not true within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The value of one sample line in a Prometheus exposition, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

impl Resp {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn run_ok(cmd: &mut std::process::Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Python virtualenv under target/ with `requirements` installed, created or rebuilt
/// when missing or stale; returns its python. A marker file holds the hash of the
/// requirements it was built from, so a changed pin rebuilds it. Panics (the test
/// fails, never skips) when python3 or PyPI is not there.
pub fn venv(name: &str, requirements: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    use std::process::Command;
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let wanted = sitegate::demo::hex(&Sha256::digest(std::fs::read(requirements).unwrap()));
    let marker = venv.join(".sitegate-requirements");
    let python = venv.join("bin").join("python");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) && python.exists()
    {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run_ok(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "creating a virtualenv (python3 -m venv; on Debian: apt-get install python3-venv)",
    );
    run_ok(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
            ])
            .arg(requirements),
        &format!("installing {} from PyPI", requirements.display()),
    );
    std::fs::write(&marker, &wanted).unwrap();
    python
}

/// Sends raw bytes on a fresh connection and reads the answer until the server closes
/// it or `wait` passes.
pub async fn raw_exchange(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    wait: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
