//! A small harness: a project in a temp dir, the real `stagegate` binary, and assertions
//! that print both sides on mismatch.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stagegate"))
}

/// The binary of a workspace package, built once per test process.
fn built(package: &'static str, cell: &'static std::sync::OnceLock<PathBuf>) -> PathBuf {
    cell.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", package])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {package} failed");
        let path = bin().parent().unwrap().join(package);
        assert!(path.exists(), "{} missing after build", path.display());
        path
    })
    .clone()
}

/// The demo service binary, built on first use (tests of the local driver run it).
pub fn demo_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    built("quickstart-demo", &BUILT)
}

pub struct Project {
    pub dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Project {
    pub fn new(plan: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("stagegate.yml"), plan).unwrap();
        Self { dir }
    }

    /// A project whose plan deploys the demo service (copied in as `demo`).
    pub fn with_demo(plan: &str) -> Self {
        let p = Self::new(plan);
        std::fs::copy(demo_bin(), p.path().join("demo")).unwrap();
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, content: &str) -> &Self {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, content).unwrap();
        self
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap_or_default()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.path())
            .env("CI", "true")
            .env("STAGEGATE_ACTOR", "tester")
            .env_remove("STAGEGATE_FILE")
            .env_remove("STAGEGATE_STATE")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Out::of(c)
    }

    /// Runs with a clean environment (PATH, HOME and the given variables), so the machine's
    /// own variables (an AWS key, DRY_RUN) play no part.
    pub fn run_clean(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.cmd(args);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()),
            )
            .env("CI", "true")
            .env("STAGEGATE_ACTOR", "tester");
        for (k, v) in env {
            c.env(k, v);
        }
        Out::of(c)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("stagegate starts")
    }

    /// Waits until a file exists (a step's marker), failing after `max`.
    pub fn wait_for(&self, name: &str, max: Duration) {
        let start = Instant::now();
        while !self.path().join(name).exists() {
            assert!(
                start.elapsed() < max,
                "{name} did not appear within {max:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Project {
    /// Services outlive stagegate on purpose; a test must not leave them behind.
    fn drop(&mut self) {
        let releases = self.path().join(".stagegate/releases");
        if let Ok(envs) = std::fs::read_dir(&releases) {
            for env in envs.flatten() {
                let name = env.file_name().to_string_lossy().into_owned();
                let _ = self.cmd(&["stop", &name]).output();
            }
        }
    }
}

impl Out {
    pub fn of(mut c: Command) -> Self {
        let o = c.output().expect("stagegate runs");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn show(&self) -> String {
        format!(
            "exit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, want, "unexpected exit code\n{}", self.show());
        self
    }

    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}\n{}",
            self.show()
        );
        self
    }

    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}\n{}",
            self.show()
        );
        self
    }

    pub fn lacks(&self, s: &str) -> &Self {
        assert!(
            !self.stdout.contains(s) && !self.stderr.contains(s),
            "output contains {s:?}\n{}",
            self.show()
        );
        self
    }
}

/// A plain HTTP GET on loopback; returns (status, body).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

pub fn status_json(p: &Project, env: &str) -> serde_json::Value {
    let o = p.run(&["status", env, "--json"]);
    o.code(0);
    serde_json::from_str(&o.stdout).expect("status --json is JSON")
}

/// Every file below `dir`, for tests that scan what stagegate wrote.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every report kind and the events, written beside the plan: `REPORT_FILES`.
pub const REPORT_ARGS: &[&str] = &[
    "--report",
    "json=r.json",
    "--report",
    "junit=r.xml",
    "--report",
    "markdown=r.md",
    "--events",
    "e.jsonl",
];

/// The files a run with `REPORT_ARGS` writes.
pub const REPORT_FILES: &[&str] = &["r.json", "r.xml", "r.md", "e.jsonl"];

/// `args` followed by `REPORT_ARGS`.
pub fn with_reports<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(REPORT_ARGS);
    all
}

fn has(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// No secret is anywhere a run with `REPORT_ARGS` (deployment 1) left it: the report and
/// event files (each non-empty), `show 1`, `show 1 --json`, `history --json`, `plan ENV`
/// (each exiting 0), and every byte under `.stagegate`. Returns how many files were read
/// under `.stagegate`.
pub fn assert_nowhere(p: &Project, secrets: &[&str], env: &str) -> usize {
    for f in REPORT_FILES {
        let text = p.read(f);
        assert!(!text.is_empty(), "{f} is empty");
        for s in secrets {
            assert!(!text.contains(s), "{f} leaks {s:?}:\n{text}");
        }
    }
    for cmd in [
        vec!["show", "1"],
        vec!["show", "1", "--json"],
        vec!["history", "--json"],
        vec!["plan", env],
    ] {
        let o = p.run(&cmd);
        o.code(0);
        for s in secrets {
            o.lacks(s);
        }
    }
    assert_not_stored(p, secrets)
}

/// No secret in any byte under `.stagegate`: the store (and its WAL), the step logs, the
/// release metadata. What a service writes in its own release directory (the staging
/// demo's uploaded blobs, under `data/`) is the service's. Returns how many files were read.
pub fn assert_not_stored(p: &Project, secrets: &[&str]) -> usize {
    let state = p.path().join(".stagegate");
    let mut read = 0;
    for f in walk(&state) {
        let rel = f.strip_prefix(&state).unwrap();
        if rel.starts_with("releases") && rel.components().any(|c| c.as_os_str() == "data") {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        for s in secrets {
            assert!(!has(&bytes, s), "{} leaks {s:?}", f.display());
        }
        read += 1;
    }
    read
}

/// The first line of a plan shown in the docs: `# stagegate.yml`, alone or followed by a
/// title (`# stagegate.yml: a config gate`).
pub const DOC_PLAN: &str = "# stagegate.yml";

/// One fenced code block of a Markdown file.
#[derive(Debug, Clone)]
pub struct Block {
    /// The info string after the opening fence (`yaml`, `console`, ...).
    pub info: String,
    /// The 1-based line of the opening fence.
    pub line: usize,
    pub body: String,
}

impl Block {
    pub fn first_line(&self) -> &str {
        self.body.lines().next().unwrap_or("").trim_end()
    }

    /// Whether the block is a plan the docs show as valid (see `DOC_PLAN`).
    pub fn is_plan(&self) -> bool {
        self.first_line().starts_with(DOC_PLAN)
    }
}

/// Fenced blocks (``` or ~~~, three or more) in document order. A closing fence uses the
/// same character, at least as many times, and nothing else.
pub fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, Block)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let fence_char = line.chars().next().filter(|c| *c == '`' || *c == '~');
        let fence_len = fence_char.map_or(0, |c| line.chars().take_while(|x| *x == c).count());
        match &mut open {
            None => {
                if let Some(c) = fence_char
                    && fence_len >= 3
                {
                    open = Some((
                        c,
                        fence_len,
                        Block {
                            info: line[fence_len..].trim().to_string(),
                            line: i + 1,
                            body: String::new(),
                        },
                    ));
                }
            }
            Some((c, len, block)) => {
                if fence_char == Some(*c)
                    && fence_len >= *len
                    && line[fence_len..].trim().is_empty()
                {
                    blocks.push(open.take().expect("a block is open").2);
                } else {
                    block.body.push_str(raw);
                    block.body.push('\n');
                }
            }
        }
    }
    if let Some((_, _, block)) = open {
        panic!("unclosed code block opened at line {}", block.line);
    }
    blocks
}

pub fn docs_dir() -> PathBuf {
    repo_root().join("docs")
}

/// Every `docs/*.md`, sorted.
pub fn doc_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(docs_dir())
        .expect("docs/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

/// The plans in `docs/NAME`: fenced blocks whose first line starts with `# stagegate.yml`.
pub fn doc_plans(name: &str) -> Vec<String> {
    let path = docs_dir().join(name);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fenced_blocks(&doc)
        .into_iter()
        .filter(Block::is_plan)
        .map(|b| b.body)
        .collect()
}

/// The staging-demo binary, built on first use.
pub fn staging_demo_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    built("staging-demo", &BUILT)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example's build line compiles the demo with cargo in the repository; here the
/// binary is already built and copied, so the build only checks that it is there.
pub const EXAMPLE_BUILD: &str = "build: cargo build -q -p staging-demo && mkdir -p build && cp ../../target/debug/staging-demo build/";

/// An example plan in a temporary directory, with the staging-demo binary in `build/`.
pub fn example(name: &str) -> Project {
    let text = std::fs::read_to_string(
        repo_root()
            .join("examples")
            .join(name)
            .join("stagegate.yml"),
    )
    .expect("the example plan exists");
    assert!(
        text.contains(EXAMPLE_BUILD),
        "the example's build line changed; update EXAMPLE_BUILD"
    );
    let p = Project::new(&text.replace(EXAMPLE_BUILD, "build: test -x build/staging-demo"));
    // Data files beside the plan (a users file) come along; the scripts do not.
    let dir = repo_root().join("examples").join(name);
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if entry.path().is_file() && file != "stagegate.yml" && !file.ends_with(".sh") {
            std::fs::copy(entry.path(), p.path().join(&*file)).unwrap();
        }
    }
    std::fs::create_dir_all(p.path().join("build")).unwrap();
    std::fs::copy(staging_demo_bin(), p.path().join("build/staging-demo")).unwrap();
    p
}

pub fn show_json(p: &Project, id: &str) -> serde_json::Value {
    show_json_with(p, &[], id)
}

/// `show ID --json` after the global options `global` (`["-f", "other.yml"]`).
pub fn show_json_with(p: &Project, global: &[&str], id: &str) -> serde_json::Value {
    let mut args = global.to_vec();
    args.extend_from_slice(&["show", id, "--json"]);
    let o = p.run(&args);
    o.code(0);
    serde_json::from_str(&o.stdout).expect("show --json is JSON")
}

/// A tiny HTTP/1.1 server on loopback: every request gets `respond(request_line, body)`.
/// Returns its port.
pub fn serve(respond: impl Fn(&str, &[u8]) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    serve_head(move |head, body| respond(head.lines().next().unwrap_or(""), body))
}

/// Like [`serve`], but `respond` gets the whole head: the request line and its headers.
pub fn serve_head(respond: impl Fn(&str, &[u8]) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let respond = std::sync::Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(&respond(&head, &buf[head_end..]));
            });
        }
    });
    port
}

/// A whole HTTP/1.1 response that closes the connection.
pub fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn step<'a>(show: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {show:#}"))
}

/// Runs SQL on a project's state store behind stagegate's back (one connection, so a
/// `PRAGMA` holds for what follows), as someone with write access to the file could.
pub fn tamper(p: &Project, sql: &str) {
    let path = p.path().join(".stagegate").join("state.db");
    let sql = sql.to_string();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        });
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request over a fresh loopback connection (`Connection: close`).
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let raw = read_reply(&mut s);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The bytes of one response: up to the end of a `Content-Length` body, else to the close.
/// Some servers (chromedriver) keep the connection open after `Connection: close`, so
/// reading to the end would wait for the read timeout on every request.
fn read_reply(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(n) = length
                && raw.len() >= end + 4 + n
            {
                raw.truncate(end + 4 + n);
                return raw;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
