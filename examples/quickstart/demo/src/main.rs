//! The quickstart's demo service: a tiny HTTP server with no dependencies.
//!
//! - `GET /health` answers `{"status":"ok","version":"VERSION"}` with 200, or 503 when the
//!   service was started with `DEMO_BREAK=health` (the quickstart's broken release).
//! - `GET /` answers `hello from quickstart-demo VERSION`.
//!
//! It listens on $DEMO_BIND:$PORT (default 127.0.0.1:8000) and reads its version from
//! `DEMO_VERSION`.
//! With `DEMO_BREAK=crash` it exits at once with an error, as a release that cannot start would.
//! `quickstart-demo probe` asks 127.0.0.1:$PORT/health once and exits 0 on a 200: an image's
//! HEALTHCHECK (the image has no curl).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    if std::env::args().nth(1).as_deref() == Some("probe") {
        std::process::exit(probe(&port));
    }
    let version = std::env::var("DEMO_VERSION").unwrap_or_else(|_| "0.0.0".into());
    let broken = std::env::var("DEMO_BREAK").unwrap_or_default();
    if broken == "crash" {
        eprintln!("quickstart-demo {version}: refusing to start (DEMO_BREAK=crash)");
        std::process::exit(1);
    }
    let bind = std::env::var("DEMO_BIND").unwrap_or_else(|_| "127.0.0.1".into());
    let listener = match TcpListener::bind(format!("{bind}:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("quickstart-demo: cannot listen on {bind}:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("quickstart-demo {version} listening on {bind}:{port}");
    for stream in listener.incoming().flatten() {
        let version = version.clone();
        let broken = broken.clone();
        std::thread::spawn(move || handle(stream, &version, &broken));
    }
}

fn handle(mut stream: TcpStream, version: &str, broken: &str) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/health" if broken == "health" => (
            "503 Service Unavailable",
            "application/json",
            format!(r#"{{"status":"broken","version":"{version}"}}"#),
        ),
        "/health" => (
            "200 OK",
            "application/json",
            format!(r#"{{"status":"ok","version":"{version}"}}"#),
        ),
        "/" => (
            "200 OK",
            "text/plain",
            format!("hello from quickstart-demo {version}\n"),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// One `GET /health` on this machine's port: 0 when it answers 200, 1 otherwise.
fn probe(port: &str) -> i32 {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect(format!("127.0.0.1:{port}")) else {
        eprintln!("probe: nothing listens on port {port}");
        return 1;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let ok = answer.starts_with("HTTP/1.1 200");
    println!("{}", answer.lines().last().unwrap_or(""));
    if ok { 0 } else { 1 }
}
