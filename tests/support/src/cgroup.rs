//! Real cgroups that remove themselves, and the block device helpers that the
//! I/O accounting tests need.

use agent::cgroup::{AGENT_SUBTREE, Hierarchy};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
        let path = format!("/{AGENT_SUBTREE}/{name}");
        let v2 = hierarchy.is_v2();
        if v2 {
            // Controllers must be enabled from the root down for the leaf to get files.
            enable_v2_controllers(hierarchy.root());
            let parent = hierarchy.root().join(AGENT_SUBTREE);
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
