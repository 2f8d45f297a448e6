//! Shared pieces of the privileged and end-to-end tests: root checks, real cgroups
//! that remove themselves, a memory/CPU hog process, the agent binary as a child, a real
//! Prometheus server ([`prometheus`]) and a minimal HTTP client; real container
//! runtimes on private roots and sockets ([`docker`], [`containerd`], [`podman`]); the launch tests'
//! state dirs and images ([`launch`]); starting an eBPF tracer and reading its events ([`ebpf`]); the dashboard's queries
//! ([`dashboard_queries`]). Everything cleans up in `Drop`, also when a test fails.

mod agent_process;
mod cgroup;
pub mod containerd;
pub mod daemonset;
pub mod dashboard_queries;
pub mod docker;
pub mod ebpf;
mod hog;
pub mod launch;
pub mod podman;
pub mod prometheus;
pub mod registry;
pub mod token_server;

pub use agent_process::{AgentOptions, AgentProcess};
pub use cgroup::{TestCgroup, block_device_dir, block_device_of, enable_v1_blkio_counting};
pub use hog::Hog;

use agent::cgroup::Hierarchy;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The `agent` binary of this build. Cargo builds a package's binaries before its
/// integration tests and puts them beside their `deps/` directory (a library
/// cannot see `CARGO_BIN_EXE_agent`, which only the test crates get).
pub fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let bin = dir.join("agent");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p agent` (cargo test does)",
        bin.display()
    );
    bin
}

/// The agent's OCI image (`cargo xtask image`'s code) built from the binary under
/// test into `out`: the tests prove the image of the code they test.
pub fn agent_image(out: &Path) -> xtask::image::Image {
    xtask::image::build(&agent_bin(), out, "agent-test/agent:1")
        .unwrap_or_else(|e| panic!("building the agent's image: {e:#}"))
}

/// True when running as root; otherwise prints why the test is skipped.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED {test}: needs root (real cgroups); run as root, as CI does");
    }
    root
}

/// The host's cgroup hierarchy.
pub fn host_hierarchy() -> Hierarchy {
    Hierarchy::detect("/sys/fs/cgroup").expect("cgroup filesystem at /sys/fs/cgroup")
}

/// A free TCP port on loopback, picked below the ephemeral range (32768+) so that the
/// many client connections of a test run cannot take it between the check and the
/// server's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    loop {
        let n = seed.wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
        let port = 20_000 + (n % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Records an exited container the way `agent launch` does (a complete
/// `state.json` under `state_dir`), so the agent labels cgroup `/agent/<id>`
/// with its name, image and labels (`labels` is a JSON object).
pub fn write_container_state(state_dir: &Path, id: &str, name: &str, image: &str, labels: &str) {
    let dir = state_dir.join("containers").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let json = format!(
        r#"{{"version":1,"id":{id:?},"name":{name:?},"image":{image:?},"image_id":"sha256:00",
"command":["true"],"labels":{labels},"status":"exited","created_at":0.0,"exit_code":0,
"limits":{{}},"rootfs":{{"upperdir":"","workdir":"","merged":"","lowerdirs":[]}},
"network":"none","hostname":"h"}}"#
    );
    std::fs::write(dir.join("state.json"), json).unwrap();
}

/// A blocking HTTP/1.1 GET; returns status and body. Headers are `(name, value)`.
pub fn http_get(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..pos]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[pos + 2..pos + 2 + size]);
        data = &data[pos + 2 + size + 2..];
    }
    out
}

/// Finds the value of the sample `name{labels…}` whose labels include `id="<id>"`
/// in a classic-text or OpenMetrics exposition.
pub fn sample(exposition: &str, name: &str, id: &str) -> Option<f64> {
    let needle = format!("id=\"{id}\"");
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        if !rest.starts_with('{') || !rest.contains(&needle) {
            return None;
        }
        rest.rsplit(' ').next()?.parse().ok()
    })
}

/// Reads lines of a child's stdout on a thread, into a channel.
pub fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Runs promtool with `args` in `dir`; panics with its output unless it succeeds.
pub fn promtool(dir: &Path, args: &[&str]) -> String {
    let program = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    let output = match Command::new(&program).args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` not found: these tests need promtool. Install Debian's `prometheus` \
             package (apt-get install prometheus, gives /usr/bin/promtool) or set PROMTOOL."
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "`promtool {}` failed in {}:\n{text}",
        args.join(" "),
        dir.display()
    );
    text
}
