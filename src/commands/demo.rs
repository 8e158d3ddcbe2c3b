//! `sitegate demo`: the proxy on 127.0.0.1:8080 in front of the embedded stand-in app,
//! with the shipped policy, and curl lines to try.

use std::path::Path;
use std::process::ExitCode;

use crate::state::Overrides;
use crate::{config, demo, observe, server};

/// Starts the stand-in on a free port, points the shipped policy's upstream at it, and
/// serves until Ctrl-C.
pub async fn demo(main: &Path) -> anyhow::Result<ExitCode> {
    let policy = match config::load(main) {
        Ok(p) => p,
        Err(diags) => {
            super::print_diagnostics(main, &diags);
            eprintln!("sitegate demo: run it from the repository root, where config/ is");
            return Ok(ExitCode::FAILURE);
        }
    };
    let app = demo::start(([127, 0, 0, 1], 0).into()).await?;
    let authority = http::uri::Authority::try_from(app.addr.to_string())?;
    let logs = observe::init(&policy.logging)?;
    let stop = super::termination();
    let running = server::start(
        policy,
        server::Options {
            config: main.to_path_buf(),
            overrides: Overrides {
                upstream: Some(authority),
                ..Overrides::default()
            },
            set_log_level: Some(logs.level_setter()),
        },
    )
    .await?;
    println!("{}", banner(&running, app.addr, main));
    stop.await;
    running.shutdown();
    running.wait().await;
    Ok(ExitCode::SUCCESS)
}

fn banner(running: &server::Running, app: std::net::SocketAddr, main: &Path) -> String {
    let p = running.addr;
    let a = running.admin_addr;
    let j = "-H 'Content-Type: application/json'";
    format!(
        r#"
sitegate demo: proxy http://{p} -> stand-in app http://{app}, policy {main}
(JSON logs follow below; Ctrl-C drains and stops)

Try:
  # proxied to the app, with X-Request-Id added
  curl -si http://{p}/api/phase9/intelligence {j} -d '{{"project_id":"P001","project_name":"Bridge","budget":1200000,"scheduled_duration_days":400}}'
  # a record that breaks the project schema: 400 VALIDATION_FAILED listing every problem
  curl -si http://{p}/api/phase9/intelligence {j} -d '[{{"project_id":"X1","budget":-5}}]'
  # sanitized before the app sees it: trimmed name, numeric string turned into a number
  curl -si http://{p}/api/phase9/intelligence {j} -d '{{"project_id":"P002","project_name":"  Tower  ","budget":"950000","scheduled_duration_days":"300"}}'
  # model lock: a locked version serves; an unlocked one does not (409 MODEL_NOT_LOCKED)
  curl -si http://{p}/models/delay-predictor/2.1.0/predict {j} -d '{{}}'
  curl -si http://{p}/models/risk-classifier/0.9.0/predict {j} -d '{{}}'
  # retraining needs the explicit flag: 428 without it, 202 with it
  curl -si http://{p}/models/delay-predictor/retrain {j} -d '{{"force_retrain":"true"}}'
  curl -si http://{p}/models/delay-predictor/retrain {j} -d '{{"force_retrain":true}}'
  # your own request id is kept
  curl -si http://{p}/health -H 'X-Request-Id: my-trace-1'
  # wrong content type: 415 UNSUPPORTED_MEDIA_TYPE, the app is never called
  curl -si http://{p}/api/phase9/intelligence -H 'Content-Type: text/plain' -d 'hello'
  # body over the route's 2 MiB limit: 413 PAYLOAD_TOO_LARGE, also when chunked
  head -c 3000000 /dev/zero | curl -si http://{p}/api/phase9/intelligence {j} -H 'Transfer-Encoding: chunked' --data-binary @-
  # the app crashing on a phase route: the route's fallback answers, X-Sitegate-Fallback: 5xx
  curl -si 'http://{p}/api/phase9/intelligence?fail=1' {j} -d '{{"project_id":"P001","project_name":"Bridge","budget":1200000,"scheduled_duration_days":400}}'
  # the app leaking a (fake, documented) AWS key: redacted, X-Sitegate-Redacted: 1
  curl -si http://{p}/api/leak
  # a secret in a stream of 1 MB log lines: every one redacted as it passes
  curl -s 'http://{p}/secrets?n=1000000' | grep -c REDACTED
  # the app failing where no fallback is configured: its 500 passes through unchanged
  curl -si http://{p}/api/fail
  # admin: health, readiness, metrics, the loaded policy, and a reload
  curl -s http://{a}/readyz; curl -s http://{a}/config; curl -s http://{a}/metrics | grep sitegate_requests
  curl -s -X POST http://{a}/reload
Edit {main} (or any file it includes) and watch the log: the change is checked and
swapped in, or refused with file:line:col while the old policy keeps serving.
"#,
        main = main.display()
    )
}
