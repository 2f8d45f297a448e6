//! Thousands of idle connections and descriptor exhaustion: a scrape still answers at
//! once, the memory is handed back, and running out of descriptors is logged once.

use super::*;

/// The flood tests hold thousands of descriptors each and load both cores: one at a time.
static FLOOD: Mutex<()> = Mutex::new(());

const IDLE_CONNECTIONS: usize = 5_000;

/// Lets this test process hold the flood's sockets.
fn raise_own_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur as usize > IDLE_CONNECTIONS + 500,
        "this test needs {} open files; the hard limit is {}",
        IDLE_CONNECTIONS + 500,
        lim.rlim_cur
    );
}

/// The resident size of `pid` in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// What a flood of idle connections did to the agent.
#[derive(Debug)]
struct Flood {
    rss_before: f64,
    rss_during: f64,
    rss_after: f64,
    scrape_during: Duration,
}

/// Holds [`IDLE_CONNECTIONS`] idle connections to `agent`, scrapes while they are
/// open, closes them and waits (up to 10 s) for the resident size to fall under
/// `rss_goal` MiB.
fn flood(agent: &AgentProcess, rss_goal: f64) -> Flood {
    raise_own_nofile();
    timed_scrape(&agent.addr);
    let rss_before = rss_mib(agent.pid());
    let conns = open_idle(&agent.addr, IDLE_CONNECTIONS);
    // Let the agent accept (and, at its cap, turn over) all of them.
    std::thread::sleep(Duration::from_millis(1500));
    let scrape_during = timed_scrape(&agent.addr);
    let rss_during = rss_mib(agent.pid());
    drop(conns);
    // Let the agent see them close before the first look.
    std::thread::sleep(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rss_after = rss_mib(agent.pid());
    while rss_after >= rss_goal && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        rss_after = rss_mib(agent.pid());
    }
    let f = Flood {
        rss_before,
        rss_during,
        rss_after,
        scrape_during,
    };
    eprintln!("{IDLE_CONNECTIONS} idle connections: {f:?}");
    f
}

/// Starts an agent with `extra` flags as `options` say, floods it, and checks that
/// the scrape during the flood took under 1 s and that its resident size fell back
/// under 40 MiB after.
fn flood_checked(extra: &[&str], options: AgentOptions) -> (AgentProcess, Flood) {
    let agent = AgentProcess::start_with_options(extra, &options);
    let f = flood(&agent, 40.0);
    assert!(
        f.scrape_during < Duration::from_secs(1),
        "scrape took {:?}",
        f.scrape_during
    );
    assert!(
        f.rss_after < 40.0,
        "RSS {:.1} MiB after the flood",
        f.rss_after
    );
    (agent, f)
}

fn nofile(n: u64) -> AgentOptions {
    AgentOptions {
        nofile: Some(n),
        ..AgentOptions::default()
    }
}

/// 5,000 idle connections with the default limits and plenty of descriptors: a
/// scrape is answered at once, and the agent's memory is small afterwards.
#[test]
fn idle_flood_neither_blocks_a_scrape_nor_keeps_memory() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    flood_checked(&[], nofile(20_000));
}

/// With a cap high enough to let all 5,000 in, the agent's memory grows with them
/// and is handed back to the system once they close.
#[test]
fn memory_taken_by_a_flood_is_returned() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let (_agent, f) = flood_checked(&["--web.max-connections", "20000"], nofile(20_000));
    assert!(
        f.rss_during > f.rss_before + 20.0,
        "the flood should have cost memory: {f:?}"
    );
}

/// Out of descriptors (256, below the connection cap): the agent closes idle
/// connections to make room, answers the scrape at once, and says so once, not
/// once per failed accept.
#[test]
fn fd_exhaustion_is_survived_and_logged_once() {
    let _one = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let options = AgentOptions {
        stderr: Some(log.clone()),
        ..nofile(256)
    };
    let (mut agent, _) = flood_checked(&[], options);
    // And another one after a burst of new connections that all need descriptors.
    let more = open_idle(&agent.addr, 1_000);
    let again = timed_scrape(&agent.addr);
    drop(more);
    assert!(
        again < Duration::from_secs(1),
        "second scrape took {again:?}"
    );
    assert!(agent.stop(), "clean exit after the flood");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("accept failed")).count();
    eprintln!("\"accept failed\" lines: {lines}");
    assert!(
        lines >= 1,
        "the flood should have exhausted descriptors:\n{text}"
    );
    assert!(lines <= 3, "{lines} \"accept failed\" lines:\n{text}");
}
