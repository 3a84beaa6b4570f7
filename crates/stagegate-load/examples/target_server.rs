//! A load-test target for `scripts/bench-load.sh`, with exact timing:
//!
//! ```text
//! target_server ADDR [--delay MS] [--stall MS --stall-at N]
//! ```
//!
//! One OS thread per connection, HTTP/1.1 keep-alive, `GET` without a body, answering
//! `ok\n`. `--delay` waits that long before each answer, to within a few microseconds
//! (a sleep, then yielding for the last 300 µs). `--stall` freezes every answer for that long once, starting
//! when the `--stall-at`-th request arrives (default 1). It prints its address and serves
//! until killed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Settings {
    delay: Duration,
    stall: Option<Duration>,
    stall_at: u64,
    hits: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
}

fn millis(s: &str) -> Duration {
    let ms: f64 = s
        .trim_end_matches("ms")
        .parse()
        .unwrap_or_else(|_| panic!("`{s}` is not a number of milliseconds"));
    Duration::from_secs_f64(ms / 1000.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let mut s = Settings {
        delay: Duration::ZERO,
        stall: None,
        stall_at: 1,
        hits: AtomicU64::new(0),
        stall_until: Mutex::new(None),
    };
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--delay" => s.delay = millis(&v),
            "--stall" => s.stall = Some(millis(&v)),
            "--stall-at" => s.stall_at = v.parse().expect("--stall-at N"),
            other => panic!("unknown option {other}"),
        }
    }
    let listener = TcpListener::bind(&addr).expect("bind");
    println!("{}", listener.local_addr().expect("address"));
    let s = Arc::new(s);
    for stream in listener.incoming().flatten() {
        let s = s.clone();
        let _ = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || serve(stream, &s));
    }
}

/// Sleeps `d` to within a few microseconds: the kernel's sleep overshoots by 50 µs or more
/// (timer slack, wake-up), so the last stretch is spent yielding.
fn precise_sleep(d: Duration) {
    let until = Instant::now() + d;
    let spin = Duration::from_micros(300);
    if d > spin {
        std::thread::sleep(d - spin);
    }
    while Instant::now() < until {
        std::thread::yield_now();
    }
}

fn serve(stream: TcpStream, s: &Settings) {
    let _ = stream.set_nodelay(true);
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // Read one request head: lines up to the empty one.
        let mut seen = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                if seen {
                    break;
                }
                continue;
            }
            seen = true;
        }
        let n = s.hits.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(stall) = s.stall {
            let until = {
                let mut u = s.stall_until.lock().expect("lock");
                if u.is_none() && n >= s.stall_at {
                    *u = Some(Instant::now() + stall);
                }
                *u
            };
            if let Some(until) = until {
                let now = Instant::now();
                if now < until {
                    std::thread::sleep(until - now);
                }
            }
        }
        if !s.delay.is_zero() {
            precise_sleep(s.delay);
        }
        if out
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n",
            )
            .is_err()
        {
            return;
        }
    }
}
