//! `sitegate health`: asks a running sitegate's admin listener for `/healthz`.
//!
//! Minimal runtime images (distroless, scratch) have no shell and no curl, so a
//! container `HEALTHCHECK` needs the binary itself to probe. One blocking request over
//! std's TcpStream: no runtime to start, nothing to configure.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Exit 0 when `/healthz` answers 200 within `timeout`, else 1 with the reason on stderr.
pub fn health(admin: SocketAddr, timeout: Duration) -> ExitCode {
    let target = probe_address(admin);
    match probe(target, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("sitegate health: http://{target}/healthz: {why}");
            ExitCode::FAILURE
        }
    }
}

/// A listener bound to the unspecified address is reached on loopback.
fn probe_address(admin: SocketAddr) -> SocketAddr {
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, admin.port())
}

fn probe(target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    // The status line is all that matters; the admin answers are a few hundred bytes.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() {
        match stream.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(e.to_string()),
        }
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..len]);
    let line = line.lines().next().unwrap_or("").trim();
    let status = line.split(' ').nth(1);
    if line.starts_with("HTTP/1.") && status == Some("200") {
        Ok(())
    } else if line.is_empty() {
        Err("no answer".to_string())
    } else {
        Err(format!("answered {line:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9901".parse().unwrap();
        let v6: SocketAddr = "[::]:9901".parse().unwrap();
        let pod: SocketAddr = "10.1.2.3:9901".parse().unwrap();
        assert_eq!(probe_address(v4).to_string(), "127.0.0.1:9901");
        assert_eq!(probe_address(v6).to_string(), "[::1]:9901");
        assert_eq!(probe_address(pod), pod);
    }
}
