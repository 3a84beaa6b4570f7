//! A load-test target for the benchmark script: `target_server ADDR [--delay 10ms]
//! [--stall 1s --stall-at N]`. It prints its address, then serves until killed.

#[path = "../tests/server/mod.rs"]
mod server;

use std::time::Duration;

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
    let mut b = server::Behaviour::default();
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--delay" => b.delay = millis(&v),
            "--stall" => b.stall = Some(millis(&v)),
            "--stall-at" => b.stall_at = v.parse().expect("--stall-at N"),
            other => panic!("unknown option {other}"),
        }
    }
    let s = server::start_on(&addr, b);
    println!("{}", s.addr);
    loop {
        std::thread::park();
    }
}
