//! The real Docker engine for the `docker` and `compose` driver tests.
//!
//! There is no image registry here, so images are built locally `FROM scratch`: the demo
//! service binary with the shared libraries `ldd` names (a root filesystem the test writes),
//! a HEALTHCHECK that runs the binary's own `probe` mode. Every container, image and
//! Compose project a test makes carries its unique prefix and is removed when the test ends.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker command runs (install Docker Engine: the tests use the real engine)");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker ARGS` whose failure is expected or harmless.
pub fn docker_quiet(args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `DIR/rootfs/` (the demo binary as `/erp-hub` and its shared libraries) and
/// `DIR/Dockerfile` for a `FROM scratch` image of the demo service listening on `0.0.0.0:8000`.
/// `healthcheck`: the image checks itself with `/erp-hub probe` every 300 ms.
pub fn write_image_context(dir: &Path, healthcheck: bool) {
    let bin = super::common::demo_bin();
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(&bin, root.join("erp-hub")).unwrap();
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd runs");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            let to = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(p, &to).unwrap();
        }
    }
    let hc = if healthcheck {
        "HEALTHCHECK --interval=300ms --timeout=2s --retries=2 CMD [\"/erp-hub\", \"probe\"]\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY rootfs/ /\nENV DEMO_BIND=0.0.0.0 PORT=8000\nEXPOSE 8000\n{hc}ENTRYPOINT [\"/erp-hub\"]\n"
        ),
    )
    .unwrap();
}

/// Builds the demo image as `tag` from a fresh context in `dir`.
pub fn build_image(dir: &Path, tag: &str, healthcheck: bool, label: &str) {
    write_image_context(dir, healthcheck);
    docker(&[
        "build",
        "-q",
        "--label",
        &format!("dev.stagegate.test={label}"),
        "-t",
        tag,
        &dir.display().to_string(),
    ]);
}

/// A unique prefix for one test's containers, images and projects; removes everything
/// named with it when dropped.
pub struct Scope {
    pub prefix: String,
}

impl Scope {
    pub fn new(test: &str) -> Self {
        let prefix = format!("sgt{}{}", std::process::id(), test.replace('_', ""));
        let s = Self { prefix };
        s.clean();
        s
    }

    fn clean(&self) {
        if let Some(ids) =
            docker_quiet(&["ps", "-aq", "--filter", &format!("name={}", self.prefix)])
        {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut a = vec!["rm", "-f"];
                a.extend(ids);
                docker_quiet(&a);
            }
        }
        if let Some(ids) = docker_quiet(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.prefix),
        ]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut a = vec!["rm", "-f"];
                a.extend(ids);
                docker_quiet(&a);
            }
        }
        docker_quiet(&["network", "rm", &format!("{}_default", self.prefix)]);
        if let Some(imgs) = docker_quiet(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) {
            let mine: Vec<&str> = imgs
                .lines()
                .filter(|l| l.starts_with(&self.prefix))
                .collect();
            if !mine.is_empty() {
                let mut a = vec!["rmi", "-f"];
                a.extend(mine);
                docker_quiet(&a);
            }
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.clean();
    }
}

/// `docker inspect -f FORMAT NAME`, trimmed.
pub fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name]).trim().to_string()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
