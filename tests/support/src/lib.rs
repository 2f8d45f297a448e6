//! Shared pieces of the privileged and end-to-end tests: root checks, real cgroups
//! that remove themselves, a memory/CPU hog process, the agent binary as a child, a real
//! Prometheus server ([`prometheus`]) and a minimal HTTP client; real container
//! runtimes on private roots and sockets ([`docker`], [`containerd`], [`podman`]); the launch tests'
//! state dirs and images ([`launch`]); starting an eBPF tracer and reading its events ([`ebpf`]); the dashboard's queries
//! ([`dashboard_queries`]). Everything cleans up in `Drop`, also when a test fails.

pub mod containerd;
pub mod daemonset;
pub mod dashboard_queries;
pub mod docker;
pub mod ebpf;
pub mod launch;
pub mod podman;
pub mod prometheus;
pub mod registry;
pub mod token_server;

use agent::cgroup::Hierarchy;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A real cgroup, created in every controller the agent reads, removed on drop
/// (after killing whatever is left in it).
pub struct TestCgroup {
    pub path: String,
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl TestCgroup {
    /// Like [`TestCgroup::create`], and on a hybrid host also creates the cgroup on
    /// the cgroup2 mount (`unified/`) and moves processes there too, as runc and
    /// systemd place containers on hybrid hosts: that is where PSI files live.
    pub fn create_with_unified(hierarchy: &Hierarchy, name: &str) -> TestCgroup {
        let mut cg = Self::create(hierarchy, name);
        if !cg.v2
            && let Some(dir) = hierarchy.unified_dir(&cg.path)
        {
            std::fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cg.dirs.push(dir);
        }
        cg
    }

    /// Creates `/agent/<name>` (the agent's own subtree, so `agent serve` tracks it).
    pub fn create(hierarchy: &Hierarchy, name: &str) -> TestCgroup {
        let path = format!("/agent/{name}");
        let v2 = hierarchy.is_v2();
        if v2 {
            // Controllers must be enabled from the root down for the leaf to get files.
            enable_v2_controllers(hierarchy.root());
            let parent = hierarchy.root().join("agent");
            std::fs::create_dir_all(&parent).unwrap();
            enable_v2_controllers(&parent);
        }
        let dirs = hierarchy.controller_dirs(&path);
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        TestCgroup { path, dirs, v2 }
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        self.dirs.iter().map(|d| d.join(name)).find(|p| p.exists())
    }

    /// Writes a control file (the first controller directory that has it).
    pub fn write(&self, name: &str, value: &str) {
        let p = self
            .file(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.dirs));
        std::fs::write(&p, value).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// Sets a memory limit, a CPU quota/period (µs) and a pids limit, v1 or v2.
    pub fn set_limits(&self, memory: u64, quota_us: u64, period_us: u64, pids: u64) {
        if self.v2 {
            self.write("memory.max", &memory.to_string());
            self.write("cpu.max", &format!("{quota_us} {period_us}"));
        } else {
            self.write("memory.limit_in_bytes", &memory.to_string());
            self.write("cpu.cfs_period_us", &period_us.to_string());
            self.write("cpu.cfs_quota_us", &quota_us.to_string());
        }
        self.write("pids.max", &pids.to_string());
    }

    /// Moves a process into this cgroup in every controller.
    pub fn add_pid(&self, pid: i32) {
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", d.display()));
        }
    }

    /// Runs `program ARGS…` as a process of this cgroup (moved in before it execs,
    /// so all of its work is the cgroup's) and waits for it; panics unless it
    /// succeeds.
    pub fn run(&self, program: &str, args: &[&str]) {
        let mut child = Command::new("sh")
            .args(["-c", "read _ && exec \"$@\"", "sh", program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("sh for {program}: {e}"));
        self.add_pid(child.id() as i32);
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(b"go\n")
            .expect("releasing the child");
        let out = child.wait_with_output().expect("waiting for the child");
        assert!(
            out.status.success(),
            "{program} {args:?} in {}: {}: {}",
            self.path,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort();
        pids.dedup();
        pids
    }
}

fn enable_v2_controllers(dir: &Path) {
    for c in ["+memory", "+cpu", "+pids", "+io"] {
        // Already enabled, or not available: either way the test reports what it sees.
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), c);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in &self.dirs {
            while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A directory on a real block device (not tmpfs) that takes direct I/O, for tests
/// whose processes must do block I/O: `$AGENT_TEST_BLOCK_DIR` (the VM rig mounts a
/// scratch disk there), else `/var/tmp`. Returns it with its disk (see
/// [`block_device_of`]), or why there is none.
pub fn block_device_dir() -> Result<(PathBuf, (u32, u32)), String> {
    let dir = std::env::var_os("AGENT_TEST_BLOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let device = block_device_of(&dir)?;
    // Direct I/O is what makes the I/O the writer's own; some filesystems refuse it.
    let probe = dir.join(format!(".agent-test-odirect-{}", std::process::id()));
    let opened = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
    };
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = opened {
        return Err(format!("{} refuses O_DIRECT: {e}", dir.display()));
    }
    Ok((dir, device))
}

/// The `(major, minor)` of the whole disk the kernel counts the I/O of files under
/// `path` against (a partition's I/O counts on its disk), or why it is not on one.
pub fn block_device_of(path: &Path) -> Result<(u32, u32), String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if major == 0 || !sys.exists() {
        return Err(format!(
            "{} is on {major}:{minor}, not a block device (tmpfs?); set AGENT_TEST_BLOCK_DIR to a directory on a disk",
            path.display()
        ));
    }
    if !sys.join("partition").exists() {
        return Ok((major, minor));
    }
    let disk = std::fs::read_to_string(sys.join("../dev")).map_err(|e| e.to_string())?;
    let (ma, mi) = disk
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("bad dev file for {major}:{minor}: {disk:?}"))?;
    Ok((
        ma.parse().map_err(|_| format!("bad major {ma:?}"))?,
        mi.parse().map_err(|_| format!("bad minor {mi:?}"))?,
    ))
}

/// On cgroup v1, makes the kernel count `blkio.throttle.*` for disk `device`: since
/// Linux 6.10 it does so only for disks on which blk-throttle was ever configured,
/// and a no-limit rule (`MAJ:MIN 0`), written in a cgroup made for the purpose and
/// removed again, configures it without limiting anything. Nothing to do on v2.
pub fn enable_v1_blkio_counting(hierarchy: &Hierarchy, (major, minor): (u32, u32)) {
    let Some(dir) = hierarchy.dir(
        agent::cgroup::Controller::Blkio,
        &format!("/agent-test-blkio-{}", std::process::id()),
    ) else {
        return;
    };
    if hierarchy.is_v2() {
        return;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let rule = dir.join("blkio.throttle.read_bps_device");
    let written = std::fs::write(&rule, format!("{major}:{minor} 0"));
    let _ = std::fs::remove_dir(&dir);
    written.unwrap_or_else(|e| panic!("write {}: {e}", rule.display()));
}

/// A forked process that, once released, touches `memory` bytes of anonymous memory,
/// burns `cpu` of CPU time, reports its pid's readiness and then sleeps until killed
/// ([`Hog::fork`]); or touches its memory, reports, and burns CPU until killed
/// ([`Hog::fork_spinning`]).
///
/// The child only makes raw system calls (no allocation), so forking from the
/// multi-threaded test harness is sound.
pub struct Hog {
    pub pid: i32,
    go: i32,
    done: i32,
    /// Set once the child has been waited for, so drop never signals a reused pid.
    reaped: std::cell::Cell<bool>,
}

impl Hog {
    /// Forks the hog; it waits for [`Hog::release`] before doing anything.
    pub fn fork(memory: usize, cpu: Duration) -> Hog {
        Self::fork_inner(memory, Some(cpu.as_nanos().min(i64::MAX as u128) as i64))
    }

    /// Forks a hog that, once released, touches `memory` bytes, reports (so
    /// [`Hog::release_and_wait`] returns) and then burns CPU until it is killed.
    pub fn fork_spinning(memory: usize) -> Hog {
        Self::fork_inner(memory, None)
    }

    /// `cpu_ns`: CPU time to burn before reporting and sleeping; `None`: report, then
    /// burn forever.
    fn fork_inner(memory: usize, cpu_ns: Option<i64>) -> Hog {
        let mut go = [0i32; 2];
        let mut done = [0i32; 2];
        // SAFETY: pipe writes two fds into the arrays we own.
        unsafe {
            assert_eq!(libc::pipe(go.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(done.as_mut_ptr()), 0);
        }
        // SAFETY: the child only calls async-signal-safe functions and raw syscalls
        // (read, mmap, clock_gettime, write, pause, _exit): no locks, no allocation.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: in the forked child: raw syscalls on its own pipes and memory
            // only, then _exit (see the fork above).
            unsafe {
                let mut b = 0u8;
                libc::read(go[0], (&mut b as *mut u8).cast(), 1);
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    memory,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    libc::_exit(2);
                }
                let bytes = p.cast::<u8>();
                let mut i = 0;
                while i < memory {
                    std::ptr::write_volatile(bytes.add(i), 1);
                    i += 4096;
                }
                let Some(cpu_ns) = cpu_ns else {
                    libc::write(done[1], (&b as *const u8).cast(), 1);
                    let mut spin = 0u64;
                    loop {
                        spin = std::ptr::read_volatile(&spin).wrapping_add(1);
                        std::ptr::write_volatile(&mut spin, spin);
                    }
                };
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                loop {
                    libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
                    if ts.tv_sec * 1_000_000_000 + ts.tv_nsec >= cpu_ns {
                        break;
                    }
                }
                libc::write(done[1], (&b as *const u8).cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        // SAFETY: closing the ends the parent does not use.
        unsafe {
            libc::close(go[0]);
            libc::close(done[1]);
        }
        Hog {
            pid,
            go: go[1],
            done: done[0],
            reaped: std::cell::Cell::new(false),
        }
    }

    /// Lets the hog start.
    pub fn release(&self) {
        let b = 1u8;
        // SAFETY: a plain write on a pipe fd this struct owns.
        let written = unsafe { libc::write(self.go, (&b as *const u8).cast(), 1) };
        assert_eq!(written, 1);
    }

    /// Waits for the hog to exit; returns the raw wait status.
    pub fn wait_exit(&self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        if r == self.pid {
            self.reaped.set(true);
        }
        status
    }

    /// Lets the hog start and waits until it has done its work.
    pub fn release_and_wait(&self) {
        self.release();
        let mut r = 0u8;
        // SAFETY: a plain read on a pipe fd this struct owns.
        unsafe {
            assert_eq!(
                libc::read(self.done, (&mut r as *mut u8).cast(), 1),
                1,
                "hog died before finishing (OOM?)"
            );
        }
    }

    /// The hog's own CPU time (user, system) in seconds, from `/proc/<pid>/stat`.
    pub fn cpu_times(&self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (
            f[11].parse::<f64>().unwrap() / hz,
            f[12].parse::<f64>().unwrap() / hz,
        )
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child (unless already reaped, when
        // the pid may belong to someone else by now); closing our own fds.
        unsafe {
            if !self.reaped.get() {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            libc::close(self.go);
            libc::close(self.done);
        }
    }
}

/// How to start `agent serve` beyond its flags.
#[derive(Debug, Default, Clone)]
pub struct AgentOptions {
    /// Its RLIMIT_NOFILE, soft and hard (so it cannot raise it).
    pub nofile: Option<u64>,
    /// A file for its stderr (inherited when `None`).
    pub stderr: Option<PathBuf>,
    /// Ready once its port accepts connections, rather than once plain `/healthz`
    /// answers 200 (for TLS and basic auth).
    pub ready_when_listening: bool,
}

/// `agent serve` as a child process on a loopback port; stopped on drop.
pub struct AgentProcess {
    pub addr: String,
    child: Child,
    _state: tempfile::TempDir,
    /// The state root it reads launched containers from: `_state` unless given.
    state_dir: PathBuf,
}

impl AgentProcess {
    /// Starts the agent without eBPF tracing (most tests read cgroups only, and
    /// tracing from several agents at once would only slow the machine down).
    pub fn start(extra: &[&str]) -> AgentProcess {
        Self::start_with(extra, false, None)
    }

    /// Starts the agent with its eBPF tracing.
    pub fn start_traced(extra: &[&str]) -> AgentProcess {
        Self::start_with(extra, true, None)
    }

    /// Starts the agent without eBPF tracing on the state root `state_dir`.
    pub fn start_in(state_dir: &Path, extra: &[&str]) -> AgentProcess {
        Self::start_with(extra, false, Some(state_dir))
    }

    /// Starts the agent with its eBPF tracing on the state root `state_dir` (where
    /// `agent launch` keeps its containers), so it names the containers launched there.
    pub fn start_traced_in(state_dir: &Path, extra: &[&str]) -> AgentProcess {
        Self::start_with(extra, true, Some(state_dir))
    }

    /// Starts the agent with its eBPF tracing on the state root `state_dir`, as
    /// `options` say (e.g. ready once listening, for a web config with basic auth).
    pub fn start_traced_in_with_options(
        state_dir: &Path,
        extra: &[&str],
        options: &AgentOptions,
    ) -> AgentProcess {
        Self::start_full(extra, true, Some(state_dir), options)
    }

    /// Starts the agent without eBPF tracing, as `options` say.
    pub fn start_with_options(extra: &[&str], options: &AgentOptions) -> AgentProcess {
        Self::start_full(extra, false, None, options)
    }

    /// Starts the agent with extra arguments and waits until /healthz answers.
    fn start_with(extra: &[&str], traced: bool, state_dir: Option<&Path>) -> AgentProcess {
        Self::start_full(extra, traced, state_dir, &AgentOptions::default())
    }

    fn start_full(
        extra: &[&str],
        traced: bool,
        state_dir: Option<&Path>,
        options: &AgentOptions,
    ) -> AgentProcess {
        let state = tempfile::tempdir().unwrap();
        let state_dir = state_dir.unwrap_or(state.path()).to_path_buf();
        for _ in 0..4 {
            match Self::try_start(extra, traced, &state, &state_dir, options) {
                Some(child_and_addr) => {
                    let (child, addr) = child_and_addr;
                    return AgentProcess {
                        addr,
                        child,
                        _state: state,
                        state_dir,
                    };
                }
                None => eprintln!("agent could not bind its port; retrying on another"),
            }
        }
        panic!("agent could not start on any of 4 ports");
    }

    /// Starts the agent once; `None` if it exited at once (its port was taken).
    fn try_start(
        extra: &[&str],
        traced: bool,
        state: &tempfile::TempDir,
        state_dir: &Path,
        options: &AgentOptions,
    ) -> Option<(Child, String)> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(agent_bin());
        cmd.args(["serve", "--listen", &addr])
            .arg("--state-dir")
            .arg(state_dir);
        if !extra.contains(&"--rescan-interval") {
            cmd.args(["--rescan-interval", "200ms"]);
        }
        cmd.arg("--control-socket")
            .arg(state.path().join("control.sock"));
        if !traced {
            cmd.arg("--no-ebpf");
        }
        if !extra.contains(&"--docker-root") {
            cmd.arg("--docker-root").arg(state.path().join("docker"));
        }
        let stderr = match &options.stderr {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::inherit(),
        };
        if let Some(n) = options.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting the agent binary");
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert_eq!(status.code(), Some(1), "agent exited early: {status}");
                return None;
            }
            let ready = if options.ready_when_listening {
                TcpStream::connect(&addr).is_ok()
            } else {
                matches!(http_get(&addr, "/healthz", &[]), Ok((200, _)))
            };
            if ready {
                // The answer must come from this agent, not from another test's.
                std::thread::sleep(Duration::from_millis(50));
                if let Ok(None) = child.try_wait() {
                    return Some((child, addr));
                }
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not answer /healthz in 10s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The control socket of this agent.
    pub fn control_socket(&self) -> PathBuf {
        self._state.path().join("control.sock")
    }

    /// The agent's state root (a temporary directory unless given).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Records an exited container in this agent's state root: see
    /// [`write_container_state`].
    pub fn write_container_state(&self, id: &str, name: &str, image: &str, labels: &str) {
        write_container_state(self.state_dir(), id, name, image, labels);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && !self.stop()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
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
