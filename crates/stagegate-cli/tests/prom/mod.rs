//! A real Prometheus for integration tests (`mod prom;`): Debian's `prometheus` binary on a
//! free loopback port, in a temporary directory, scraping the given targets every second;
//! the same configuration as `scripts/prometheus.sh`.
//!
//! Tests that use it do not skip when Prometheus is missing: `Prometheus::start` panics and
//! says how to install it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for Prometheus to be ready and to have scraped once.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Prometheus {
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
    child: Child,
    /// `Basic ...` when it requires basic auth.
    auth: Option<String>,
}

/// A user Prometheus accepts with [`Prometheus::start_with_basic_auth`], and its password.
pub const BASIC_USER: &str = "stagegate";
pub const BASIC_PASSWORD: &str = "bake-test-password";
/// bcrypt (cost 4, so each request costs little) of [`BASIC_PASSWORD`].
const BASIC_HASH: &str = "$2b$04$2acx3v8zgzPWjjM4YNors.pG1PFJdE/b6toq5BQQMiuOQxi8Cdg5i";

impl Prometheus {
    /// Starts a real Prometheus on a free loopback port scraping `targets` ("127.0.0.1:PORT") every second.
    ///
    /// Job `demo` scrapes `targets`, job `self` Prometheus itself (scrape and evaluation
    /// interval 1s, timeout 900ms). Returns once `/-/ready` answers 200 and the first scrape
    /// is in (`up{job="self"}`): Prometheus syncs its targets only every 5 s, so this takes
    /// some 5 s, and a service started afterwards is scraped from its first second on.
    /// Panics when the `prometheus` binary is missing, or when it is not up within 30 s.
    pub fn start(targets: &[String]) -> Prometheus {
        Self::start_inner(targets, false)
    }

    /// [`Prometheus::start`] with its HTTP API behind basic auth (`--web.config.file`):
    /// [`BASIC_USER`] and [`BASIC_PASSWORD`] are let in, nobody else.
    pub fn start_with_basic_auth(targets: &[String]) -> Prometheus {
        Self::start_inner(targets, true)
    }

    fn start_inner(targets: &[String], basic: bool) -> Prometheus {
        assert!(
            available(),
            "prometheus is not installed: apt-get install prometheus (CI's .ci/run installs it)"
        );
        let dir = tempfile::tempdir().expect("a temp dir for Prometheus");
        // The port is free when picked, but another process may take it before Prometheus
        // binds it: then Prometheus exits at once, and a new port is tried.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let auth = basic.then(|| {
                use base64::Engine as _;
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"))
                )
            });
            let mut child = spawn(dir.path(), port, targets, basic);
            let url = format!("http://127.0.0.1:{port}");
            match wait_until_up(&url, &mut child, auth.as_deref()) {
                Ok(()) => {
                    return Prometheus {
                        port,
                        url,
                        dir,
                        child,
                        auth,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = log_tail(dir.path());
                    if !last_log.contains("address already in use") {
                        panic!(
                            "Prometheus did not start: {why}\n--- prometheus.log ---\n{last_log}"
                        );
                    }
                }
            }
        }
        panic!("Prometheus found no free port in 3 tries\n--- prometheus.log ---\n{last_log}");
    }

    /// Stops it (SIGTERM, wait); for the "Prometheus down mid-bake" test.
    ///
    /// Waits at most 10 s for it to exit, then kills it. Stopping twice is harmless.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Polls /api/v1/query with `query` until the result vector is non-empty (max `timeout`); returns whether it became non-empty.
    ///
    /// A comparison filters, so `up{job="demo"} == 0` becomes non-empty when the target is
    /// down. A query Prometheus rejects panics at once: waiting on it would be a test that
    /// cannot pass.
    pub fn wait_for_series(&self, query: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.query(query).is_some_and(|r| !r.is_empty()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The result vector of the instant query `query` (`data.result`), `None` when
    /// Prometheus does not answer. Panics when it answers that the query is bad.
    pub fn query(&self, query: &str) -> Option<Vec<serde_json::Value>> {
        let q: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let (status, body) = get_auth(
            &format!("{}/api/v1/query?query={q}", self.url),
            self.auth.as_deref(),
        )?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        if status == 400 || status == 422 {
            panic!("Prometheus rejects the query {query:?}: {v}");
        }
        if status != 200 {
            return None;
        }
        v["data"]["result"].as_array().cloned()
    }

    /// The directory Prometheus runs in: `prometheus.yml`, `prometheus.log`, `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of Prometheus's log, for failure messages.
    pub fn log(&self) -> String {
        log_tail(self.dir.path())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a `prometheus` binary is on PATH.
pub fn available() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join("prometheus"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `scripts/prometheus.sh`'s configuration.
fn config(port: u16, targets: &[String]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  scrape_timeout: 900ms\n\
         scrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        targets.join(", ")
    )
}

fn spawn(dir: &Path, port: u16, targets: &[String], basic: bool) -> Child {
    let config_file = dir.join("prometheus.yml");
    let mut config = config(port, targets);
    if basic {
        // Its own scrapes need the password too.
        config.push_str(&format!(
            "    basic_auth: {{ username: {BASIC_USER}, password: {BASIC_PASSWORD} }}\n"
        ));
    }
    std::fs::write(&config_file, config).expect("prometheus.yml is written");
    let web_file = dir.join("web.yml");
    std::fs::write(
        &web_file,
        format!("basic_auth_users:\n  {BASIC_USER}: '{BASIC_HASH}'\n"),
    )
    .expect("web.yml is written");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus.log opens");
    let arg = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
        let mut a = std::ffi::OsString::from(format!("--{name}="));
        a.push(value);
        a
    };
    let mut args = vec![
        arg("config.file", &config_file),
        arg("storage.tsdb.path", &dir.join("data")),
        arg("web.listen-address", &format!("127.0.0.1:{port}")),
        arg("storage.tsdb.retention.time", &"1h"),
        arg("log.level", &"warn"),
    ];
    if basic {
        args.push(arg("web.config.file", &web_file));
    }
    Command::new("prometheus")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log's handle is cloned"))
        .stderr(log)
        .spawn()
        .expect("prometheus starts")
}

/// Waits until Prometheus at `url` is ready and has scraped itself once.
fn wait_until_up(url: &str, child: &mut Child, auth: Option<&str>) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let first_scrape = format!("{url}/api/v1/query?query=up%7Bjob%3D%22self%22%7D");
    let mut ready = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}) before it was ready"));
        }
        if !ready {
            ready = get_auth(&format!("{url}/-/ready"), auth).is_some_and(|(s, _)| s == 200);
        }
        if ready
            && let Some((200, body)) = get_auth(&first_scrape, auth)
            && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| {
                v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            })
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} within {START_TIMEOUT:?}",
                if ready {
                    "it was ready but had not scraped"
                } else {
                    "/-/ready did not answer 200"
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last 40 lines of `prometheus.log` in `dir`.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// An HTTP/1.0 GET on loopback: (status, body), `None` when there is no answer.
pub fn get(url: &str) -> Option<(u16, String)> {
    get_auth(url, None)
}

/// [`get`] with an `Authorization` header.
pub fn get_auth(url: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
