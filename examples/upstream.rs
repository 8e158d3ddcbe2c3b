//! A minimal, fast HTTP/1.1 upstream for the load scripts (benches/load.sh, soak.sh):
//! GET answers a small fixed JSON document (`/big`: about 1 MiB of JSON), POST reads
//! the whole body and answers the same. It is the "direct" baseline the proxies are
//! compared against.
//!
//! Usage: cargo run --release --example upstream -- 127.0.0.1:5000

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const DOC: &[u8] =
    br#"{"project_id":"P001","risk_score":0.37,"delay_risk":"medium","phase":9,"status":"ok"}"#;

/// `GET /big`: about 1 MiB of JSON records with no secret in them, the same bytes every
/// time (built once).
fn big() -> Bytes {
    static BIG: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    BIG.get_or_init(|| {
        let mut out = String::from("[");
        let mut i = 0;
        while out.len() < 1 << 20 {
            out.push_str(&format!(
                r#"{{"project_id":"P{i:06}","risk_score":0.37,"delay_risk":"medium","note":"crane booked, pour on schedule"}},"#
            ));
            i += 1;
        }
        out.pop();
        out.push(']');
        Bytes::from(out)
    })
    .clone()
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let doc = if req.uri().path().ends_with("/big") {
        big()
    } else {
        Bytes::from_static(DOC)
    };
    // Read the body whole so POST costs what a real app's would.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(doc));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr).await?;
    println!("LISTENING {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
