//! `fake-kube PORT ROLLOUT_MS KUBECONFIG`: the integration tests' fake Kubernetes API server
//! (`crates/stagegate-cli/tests/kube/mod.rs`, the same file) on 127.0.0.1:PORT, with a
//! kubeconfig for it written at KUBECONFIG (context `staging`, namespace `staging`). It prints
//! `ready` once it listens and runs until it is killed.
//!
//! Kubernetes cannot run on this machine, so examples/kubernetes deploys to this fake: it
//! implements only the endpoints stagegate uses, and a controller that finishes a rollout
//! after ROLLOUT_MS, or fails it when the image tag contains `bad`.

#[path = "../../../crates/stagegate-cli/tests/kube/mod.rs"]
mod kube;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, rollout_ms, kubeconfig] = args.as_slice() else {
        eprintln!("usage: fake-kube PORT ROLLOUT_MS KUBECONFIG");
        std::process::exit(2);
    };
    let (Ok(port), Ok(ms)) = (port.parse::<u16>(), rollout_ms.parse::<u64>()) else {
        eprintln!("usage: fake-kube PORT ROLLOUT_MS KUBECONFIG (numbers for PORT and ROLLOUT_MS)");
        std::process::exit(2);
    };
    let fake = kube::FakeKube::start_on(port, Duration::from_millis(ms));
    fake.kubeconfig_for(std::path::Path::new(kubeconfig), kube::TOKEN, "staging");
    println!("ready {}", fake.url);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
