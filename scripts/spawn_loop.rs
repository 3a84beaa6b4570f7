//! A baseline for scripts/bench.sh: spawns `sh -c true` N times, one after the other, the way
//! stagegate spawns a step (std::process::Command, stdin null, stdout and stderr piped, own
//! process group), without anything else stagegate does. Built with `rustc -O` by the script.
//!
//!     spawn_loop N

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: spawn_loop N");
    for _ in 0..n {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("cannot spawn sh");
        let mut sink = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut sink).unwrap();
        child.stderr.take().unwrap().read_to_end(&mut sink).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "sh -c true failed: {status}");
    }
}
