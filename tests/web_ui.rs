//! The agent's web UI in a real browser (issue 16): Debian's `chromium`, headless,
//! driven over the DevTools protocol, against a live `agent serve` (with eBPF
//! tracing) watching real `agent launch` containers: one near its memory limit,
//! one throttled by its CPU quota, one that execs on demand (SIGUSR1).
//!
//! It checks the DOM (names; bar widths against what /metrics says at the same
//! reading), that an exec made after the page loaded reaches the live feed within
//! 2 s, that no argv reaches the page without authentication and that it does with
//! the web config's basic auth, the container page (charts, overlay directories,
//! namespaces) and that the console stays free of errors. Screenshots go to
//! `target/test-artifacts/web_ui/`.
//!
//! Needs root, overlayfs, busybox-static, BTF and chromium; otherwise it prints why
//! it skips. Cleanup is in `Drop`: the launch support's `Env` removes every
//! container, the agent and chromium are killed, chromium's profile is a tempdir.

use agent_test_support as common;
use agent_test_support::launch::{self as support, Env};
use base64::Engine;
use common::{AgentOptions, AgentProcess, http_get};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::{Browser, LaunchOptions, Tab};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

fn skip(reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/web_ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium, headless, with a fresh profile, and what its console reports as errors.
struct Chromium {
    browser: Browser,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn start() -> Chromium {
        let profile = tempfile::Builder::new()
            .prefix("agent-web-ui-chromium")
            .tempdir()
            .unwrap();
        let args: Vec<&OsStr> = [
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ]
        .iter()
        .map(OsStr::new)
        .collect();
        let browser = Browser::new(LaunchOptions {
            headless: true,
            sandbox: false,
            path: Some(PathBuf::from(CHROMIUM)),
            user_data_dir: Some(profile.path().to_path_buf()),
            window_size: Some((1400, 1000)),
            args,
            idle_browser_timeout: Duration::from_secs(120),
            // Its singleton socket directory (`org.chromium.Chromium.*`) goes in
            // the profile too, instead of being left in /tmp at every run.
            process_envs: Some(std::collections::HashMap::from([(
                "TMPDIR".to_string(),
                profile.path().display().to_string(),
            )])),
            ..LaunchOptions::default()
        })
        .expect("starting chromium");
        Chromium {
            browser,
            _profile: profile,
        }
    }

    /// A new tab whose console errors and uncaught exceptions are collected.
    fn tab(&self, errors: &Arc<Mutex<Vec<String>>>) -> Arc<Tab> {
        let tab = self.browser.new_tab().expect("new tab");
        tab.enable_log().unwrap();
        tab.enable_runtime().unwrap();
        let errors = errors.clone();
        tab.add_event_listener(Arc::new(move |event: &Event| {
            let text = match event {
                Event::RuntimeConsoleAPICalled(e) if format!("{:?}", e.params.Type) == "Error" => {
                    format!("console.error: {:?}", e.params.args)
                }
                Event::RuntimeExceptionThrown(e) => {
                    format!("exception: {:?}", e.params.exception_details)
                }
                Event::LogEntryAdded(e) if format!("{:?}", e.params.entry.level) == "Error" => {
                    format!("log: {} {:?}", e.params.entry.text, e.params.entry.url)
                }
                _ => return,
            };
            errors.lock().unwrap().push(text);
        }))
        .unwrap();
        tab
    }
}

/// Evaluates `js` (which returns a string) in `tab`.
fn eval(tab: &Tab, js: &str) -> String {
    let value = tab
        .evaluate(js, false)
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"))
        .value;
    match value {
        Some(serde_json::Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn screenshot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let path = artifacts().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

/// Polls `check` every 50 ms until it returns true or `within` passes.
fn within(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scrape(agent: &AgentProcess, headers: &[(&str, &str)]) -> String {
    let (status, body) = http_get(&agent.addr, "/metrics", headers).expect("GET /metrics");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap()
}

/// The value of `family{…name="NAME"…}` (the first such series).
fn value(exposition: &str, family: &str, name: &str) -> Option<f64> {
    let needle = format!("name=\"{name}\"");
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&needle))
        .find_map(|l| {
            l.rsplit_once("} ")
                .and_then(|(_, v)| v.split(' ').next()?.parse().ok())
        })
}

/// Every bar in the table, by container name and bar kind, as a fraction.
fn bars(tab: &Tab) -> HashMap<String, HashMap<String, f64>> {
    let json = eval(
        tab,
        r#"JSON.stringify(Array.from(document.querySelectorAll('#containers tbody tr')).map(function (r) {
            var bars = {};
            r.querySelectorAll('td.meter').forEach(function (td) {
                bars[td.getAttribute('data-kind')] = parseFloat(td.querySelector('.bar span').style.width) / 100;
            });
            return [r.getAttribute('data-name'), bars];
        }))"#,
    );
    let rows: Vec<(String, HashMap<String, f64>)> = serde_json::from_str(&json).unwrap();
    rows.into_iter().collect()
}

/// Sends SIGUSR1 to the exec container's shell: its trap execs `/bin/echo SECRET`.
fn trigger_exec(pid: i32) {
    // SAFETY: signalling a process of the test's own container.
    let rc = unsafe { libc::kill(pid, libc::SIGUSR1) };
    assert_eq!(rc, 0, "kill -USR1 {pid}");
}

/// The feed's entries, as text.
fn feed_text(tab: &Tab) -> String {
    eval(
        tab,
        "Array.from(document.querySelectorAll('#feed li')).map(function (l) { return l.className + ' ' + l.textContent; }).join('\\n')",
    )
}

/// Waits for the page's event source to be open.
fn wait_feed_open(tab: &Tab) {
    assert!(
        within(Duration::from_secs(10), || eval(
            tab,
            "document.getElementById('feed').getAttribute('data-state')"
        ) == "open")
        .is_some(),
        "the live feed did not connect"
    );
}

/// Triggers an exec and returns how long until the feed showed an `echo` exec of
/// `container` (None: not within 2 s).
fn exec_reaches_feed(tab: &Tab, pid: i32, container: &str, must_contain: &str) -> Option<Duration> {
    let before = feed_text(tab)
        .lines()
        .filter(|l| l.starts_with("exec ") && l.contains(container) && l.contains(must_contain))
        .count();
    trigger_exec(pid);
    within(Duration::from_secs(2), || {
        feed_text(tab)
            .lines()
            .filter(|l| l.starts_with("exec ") && l.contains(container) && l.contains(must_contain))
            .count()
            > before
    })
}

/// Reads the raw feed (`/events`) for `secs` while the exec container is told to exec.
fn raw_feed(addr: &str, pid: i32, secs: u64) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    let mut fired = false;
    while start.elapsed() < Duration::from_secs(secs) {
        if !fired && start.elapsed() > Duration::from_millis(300) {
            trigger_exec(pid);
            fired = true;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn web_ui_in_chromium() {
    if let Some(reason) = support::skip_reason() {
        return skip(&format!("web_ui_in_chromium: {reason}"));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return skip("web_ui_in_chromium: kernel has no BTF (the live feed needs eBPF)");
    }
    if !Path::new(CHROMIUM).exists() {
        return skip("web_ui_in_chromium: no chromium (apt-get install chromium)");
    }
    let env = Env::new();
    let tag = std::process::id();
    let secret = format!("webui-secret-{tag}");
    let (mem, cpu, exec) = (
        format!("webui-mem-{tag}"),
        format!("webui-cpu-{tag}"),
        format!("webui-exec-{tag}"),
    );
    // Page cache of a 60 MiB file fills a 64 MiB limit and stays near it.
    env.launch(&[
        "-d",
        "--name",
        &mem,
        "--memory",
        "64Mi",
        "--pids-limit",
        "8",
        "busybox",
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/fill bs=1M count=60; exec /bin/sleep 600",
    ])
    .ok();
    env.launch(&[
        "-d",
        "--name",
        &cpu,
        "--cpus",
        "0.2",
        "--pids-limit",
        "16",
        "busybox",
        "/bin/sh",
        "-c",
        "while :; do :; done",
    ])
    .ok();
    let script = format!("trap '/bin/echo {secret}' USR1; while :; do /bin/sleep 0.2; done");
    env.launch(&[
        "-d",
        "--name",
        &exec,
        "--memory",
        "32Mi",
        "--pids-limit",
        "16",
        "busybox",
        "/bin/sh",
        "-c",
        &script,
    ])
    .ok();
    let exec_pid = env.inspect(&exec)["pid"]
        .as_i64()
        .expect("exec container pid") as i32;
    let upperdir = env.inspect(&exec)["rootfs"]["upperdir"]
        .as_str()
        .unwrap()
        .to_owned();

    // Without a web config: no authentication, so no argv.
    let agent = AgentProcess::start_traced_in(&env.state, &[]);
    let ready = within(Duration::from_secs(20), || {
        let m = scrape(&agent, &[]);
        let usage = value(&m, "container_memory_usage_bytes", &mem).unwrap_or(0.0);
        value(&m, "container_cpu_usage_seconds_total", &cpu).is_some()
            && value(&m, "container_threads", &exec).is_some()
            && usage > 48.0 * 1024.0 * 1024.0
    });
    assert!(
        ready.is_some(),
        "the three containers did not show up in /metrics"
    );
    let exec_attached = scrape(&agent, &[]).lines().any(|l| {
        l.starts_with("agent_ebpf_program_attached{") && l.contains("exec") && l.ends_with(" 1")
    });
    if !exec_attached {
        return skip("web_ui_in_chromium: the agent attached no exec program here");
    }
    // Two scrapes a history step apart: the second is the reading the page shows
    // (fresh, so loading the page reads nothing new), and their difference is the
    // CPU rate /metrics says.
    let first = scrape(&agent, &[]);
    std::thread::sleep(Duration::from_millis(5200));
    let second = scrape(&agent, &[]);
    let started = Instant::now();

    let chromium = Chromium::start();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let tab = chromium.tab(&errors);
    tab.navigate_to(&format!("http://{}/", agent.addr)).unwrap();
    tab.wait_until_navigated().unwrap();
    wait_feed_open(&tab);
    let bars = bars(&tab);
    eprintln!(
        "bars {bars:?} read {:?} after the scrape",
        started.elapsed()
    );
    for name in [&mem, &cpu, &exec] {
        assert!(
            bars.contains_key(name),
            "{name} is not in the table: {bars:?}"
        );
    }
    let ratio = |family: &str, limit: &str, name: &str| {
        value(&second, family, name).unwrap() / value(&second, limit, name).unwrap()
    };
    let mut checked = Vec::new();
    for name in [&mem, &exec] {
        let want = ratio(
            "container_memory_usage_bytes",
            "container_spec_memory_limit_bytes",
            name,
        );
        checked.push((name.clone(), "memory", bars[name]["memory"], want));
    }
    for name in [&mem, &cpu, &exec] {
        let want = ratio("container_threads", "container_threads_max", name);
        checked.push((name.clone(), "pids", bars[name]["pids"], want));
    }
    let cpu_rate = |m: &str| value(m, "container_cpu_usage_seconds_total", &cpu).unwrap();
    let secs = 5.2; // the scrapes' spacing; the agent's own clock says ~the same
    let quota = value(&second, "container_spec_cpu_quota", &cpu).unwrap()
        / value(&second, "container_spec_cpu_period", &cpu).unwrap();
    let want_cpu = ((cpu_rate(&second) - cpu_rate(&first)) / secs / quota).min(1.0);
    checked.push((cpu.clone(), "cpu", bars[&cpu]["cpu"], want_cpu));
    for (name, kind, shown, want) in &checked {
        eprintln!("{name} {kind}: bar {shown:.4}, /metrics {want:.4}");
        assert!(
            (shown - want).abs() <= 0.05,
            "{name} {kind}: the bar shows {shown:.4}, /metrics says {want:.4}"
        );
    }
    assert!(bars[&mem]["memory"] > 0.75, "{mem} is near its limit");
    assert!(
        value(&second, "container_cpu_cfs_throttled_periods_total", &cpu).unwrap() > 0.0,
        "{cpu} is throttled"
    );
    screenshot(&tab, "index.png");

    // An exec after the page loaded reaches the feed within 2 s, as its base name only.
    let took = exec_reaches_feed(&tab, exec_pid, &exec, "echo")
        .expect("the exec did not reach the feed within 2 s");
    eprintln!("exec reached the feed after {took:?}");
    let html = eval(&tab, "document.documentElement.outerHTML");
    assert!(
        !html.contains(&secret),
        "argv reached the page without auth"
    );
    let raw = raw_feed(&agent.addr, exec_pid, 2);
    assert!(raw.contains("\"exe\":\"echo\""), "raw feed: {raw}");
    assert!(
        !raw.contains(&secret),
        "argv in the unauthenticated feed: {raw}"
    );
    screenshot(&tab, "index-feed.png");

    // The container page: 15 minutes of charts, inspect's overlay and namespaces.
    tab.navigate_to(&format!("http://{}/containers/{exec}", agent.addr))
        .unwrap();
    tab.wait_until_navigated().unwrap();
    assert!(
        within(Duration::from_secs(10), || eval(
            &tab,
            "String(document.querySelectorAll('#charts figure svg polyline').length)"
        )
        .parse::<usize>()
        .unwrap_or(0)
            >= 5)
        .is_some(),
        "the charts were not drawn"
    );
    let page = eval(&tab, "document.body.textContent");
    assert!(page.contains(&upperdir), "no overlay upperdir on the page");
    assert!(page.contains("namespace mnt"), "no namespaces on the page");
    assert!(
        !page.contains(&secret),
        "the command (argv) shown without auth"
    );
    wait_feed_open(&tab);
    exec_reaches_feed(&tab, exec_pid, &exec, "echo").expect("container feed within 2 s");
    screenshot(&tab, "container.png");
    let console = errors.lock().unwrap().clone();
    assert!(console.is_empty(), "console errors: {console:#?}");
    // Close the page before its agent goes, or its reconnects are console errors.
    tab.close(true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(agent);

    // With the web config's basic auth, the page gets the whole event.
    let hash = bcrypt::hash("ui-pw", 4).unwrap();
    let config = env.dir.path().join("web.yml");
    std::fs::write(&config, format!("basic_auth_users:\n  admin: '{hash}'\n")).unwrap();
    let agent = AgentProcess::start_traced_in_with_options(
        &env.state,
        &["--web.config.file", config.to_str().unwrap()],
        &AgentOptions {
            ready_when_listening: true,
            ..AgentOptions::default()
        },
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:ui-pw")
    );
    assert_eq!(http_get(&agent.addr, "/", &[]).unwrap().0, 401);
    assert!(
        within(Duration::from_secs(10), || value(
            &scrape(&agent, &[("Authorization", &auth)]),
            "container_threads",
            &exec
        )
        .is_some())
        .is_some()
    );
    let tab = chromium.tab(&errors);
    tab.set_extra_http_headers(HashMap::from([("Authorization", auth.as_str())]))
        .unwrap();
    tab.navigate_to(&format!("http://{}/containers/{exec}", agent.addr))
        .unwrap();
    tab.wait_until_navigated().unwrap();
    wait_feed_open(&tab);
    let took = exec_reaches_feed(&tab, exec_pid, &exec, &secret)
        .expect("the authenticated feed did not show argv within 2 s");
    eprintln!("full exec reached the authenticated feed after {took:?}");
    assert!(eval(&tab, "document.body.textContent").contains(&secret));
    screenshot(&tab, "container-authenticated.png");
    let console = errors.lock().unwrap().clone();
    assert!(console.is_empty(), "console errors: {console:#?}");
}
