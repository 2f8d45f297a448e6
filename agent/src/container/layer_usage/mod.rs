//! Writable-layer usage per container (`container_fs_usage_bytes` and friends),
//! measured off the scrape path by a background walker; the scrape reads the last
//! result.
//!
//! The layer is found the same way for every runtime: the `upperdir=` option of
//! the overlay mounted on `/` in the mount namespace of one of the container's
//! tasks (`/proc/<pid>/mountinfo`). That covers Docker's overlay2, podman, the
//! containerd overlayfs snapshotter and `agent launch`. Relative upper dirs (Docker
//! and the agent mount from their `overlay2/` directory when the options are long)
//! are looked up under the known overlay roots.
//!
//! The walker counts what `du` counts: allocated blocks (hard links once) and
//! inodes. A file written in place changes no directory, so every file is
//! `fstatat`ed at each walk of its layer; what is reused is the answer for a layer
//! that did not change: each walk that finds the same total doubles that layer's
//! interval, up to [`MAX_BACKOFF`] times the base interval, and a change resets
//! it. The walker never does more than `max_stats_per_sec` stat calls a second.

mod du;
mod upper;

pub use du::{RateLimit, measure, walk};
pub use upper::upper_dir;

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the fs families export for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUsage {
    /// The filesystem holding the layer, as cAdvisor names it: the mount's source
    /// (`/dev/vda1`).
    pub device: String,
    /// Bytes allocated to the layer's files and directories (`du`).
    pub usage_bytes: u64,
    /// Size of that filesystem (Docker sets no per-container limit; cAdvisor
    /// exports the capacity).
    pub limit_bytes: u64,
    /// Inodes the layer uses (what cAdvisor exports as `container_fs_inodes_total`
    /// for a container).
    pub inodes_used: u64,
    /// Free inodes on that filesystem.
    pub inodes_free: u64,
}

/// A walked layer never waits more than this many base intervals.
pub const MAX_BACKOFF: u32 = 8;

/// How the walker runs.
#[derive(Debug, Clone)]
pub struct WalkerConfig {
    /// Where processes are (`/proc`).
    pub proc_root: PathBuf,
    /// Base time between two walks of a layer.
    pub interval: Duration,
    /// Directories relative upper dirs are resolved under (Docker's and the
    /// agent's `overlay2/`, podman's `overlay/`).
    pub overlay_roots: Vec<PathBuf>,
    /// Stat calls per second, at most.
    pub max_stats_per_sec: u64,
}

#[derive(Debug, Default)]
struct State {
    /// cgroup path → a task of it (its first in `cgroup.procs`).
    wanted: HashMap<String, u32>,
    results: HashMap<String, LayerUsage>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The background walker; stopped on drop.
#[derive(Debug)]
pub struct UsageWalker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl UsageWalker {
    /// Starts the walker thread.
    pub fn start(config: WalkerConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fs-usage".into())
            .spawn(move || run(&s, &config))?;
        Ok(UsageWalker {
            shared,
            thread: Some(thread),
        })
    }

    /// The containers to measure now, each with one of its tasks; the others are
    /// forgotten.
    pub fn want<'a>(&self, cgroups: impl Iterator<Item = (&'a str, u32)>) {
        let wanted: HashMap<String, u32> = cgroups.map(|(c, p)| (c.to_string(), p)).collect();
        let mut st = self.shared.state.lock();
        let new = wanted.keys().any(|k| !st.wanted.contains_key(k));
        st.results.retain(|k, _| wanted.contains_key(k));
        st.wanted = wanted;
        drop(st);
        if new {
            self.shared.wake.notify_all();
        }
    }

    /// The last measurement of `cgroup`'s layer.
    pub fn usage(&self, cgroup: &str) -> Option<LayerUsage> {
        self.shared.state.lock().results.get(cgroup).cloned()
    }

    /// Every last measurement, by cgroup (one lock for a whole scrape).
    pub fn with_results<R>(&self, f: impl FnOnce(&HashMap<String, LayerUsage>) -> R) -> R {
        f(&self.shared.state.lock().results)
    }
}

impl Drop for UsageWalker {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the walker remembers of one container's layer.
#[derive(Debug)]
struct Layer {
    pid: u32,
    upper: Option<PathBuf>,
    last: Option<(u64, u64)>,
    backoff: u32,
    next_walk: Instant,
}

fn run(shared: &Shared, config: &WalkerConfig) {
    let host_mnt = upper::mnt_ns(&config.proc_root, 1)
        .or_else(|| upper::mnt_ns(&config.proc_root, std::process::id()));
    let mut layers: HashMap<String, Layer> = HashMap::new();
    let mut devices: HashMap<u64, String> = HashMap::new();
    let mut limiter = RateLimit::new(config.max_stats_per_sec);
    loop {
        let wanted = {
            let st = shared.state.lock();
            if st.stop {
                return;
            }
            st.wanted.clone()
        };
        layers.retain(|k, _| wanted.contains_key(k));
        let now = Instant::now();
        for (cgroup, pid) in &wanted {
            let layer = layers.entry(cgroup.clone()).or_insert(Layer {
                pid: *pid,
                upper: None,
                last: None,
                backoff: 1,
                next_walk: now,
            });
            if layer.upper.is_none() || layer.pid != *pid {
                if layer.pid != *pid {
                    layer.next_walk = now;
                }
                layer.pid = *pid;
                layer.upper = upper_dir(&config.proc_root, *pid, host_mnt, &config.overlay_roots);
            }
            let Some(upper) = &layer.upper else { continue };
            if layer.next_walk > Instant::now() {
                continue;
            }
            match measure(upper, &mut devices, &mut limiter) {
                Ok(usage) => {
                    let total = (usage.usage_bytes, usage.inodes_used);
                    layer.backoff = if layer.last == Some(total) {
                        (layer.backoff * 2).min(MAX_BACKOFF)
                    } else {
                        1
                    };
                    layer.last = Some(total);
                    layer.next_walk = Instant::now() + config.interval * layer.backoff;
                    let mut st = shared.state.lock();
                    if st.stop {
                        return;
                    }
                    if st.wanted.contains_key(cgroup) {
                        st.results.insert(cgroup.clone(), usage);
                    }
                }
                Err(e) => {
                    tracing::debug!(cgroup = %cgroup, error = %e, "layer walk failed");
                    // Gone, or not yet made: look for it again next time.
                    layer.upper = None;
                    layer.next_walk = Instant::now() + config.interval;
                }
            }
            if shared.state.lock().stop {
                return;
            }
        }
        // Sleep until the next layer is due (or the wanted set grows).
        let next = layers
            .values()
            .filter(|l| l.upper.is_some())
            .map(|l| l.next_walk)
            .min()
            .unwrap_or_else(|| Instant::now() + config.interval);
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(config.interval)
            .max(Duration::from_millis(100));
        let mut st = shared.state.lock();
        if st.stop {
            return;
        }
        shared.wake.wait_for(&mut st, wait);
    }
}
#[cfg(test)]
mod tests {
    use super::upper::root_upper_dir;
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    const DOCKER: &str = "\
1402 1237 0:98 / / rw,relatime master:617 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/AB:/var/lib/docker/overlay2/l/CD,upperdir=/var/lib/docker/overlay2/0c1d/diff,workdir=/var/lib/docker/overlay2/0c1d/work,nouserxattr
1403 1402 0:101 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1404 1402 0:102 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
";

    #[test]
    fn the_upper_dir_of_the_root_overlay_is_found() {
        assert_eq!(
            root_upper_dir(DOCKER.as_bytes()),
            Some(PathBuf::from("/var/lib/docker/overlay2/0c1d/diff"))
        );
        // Relative (mounted from overlay2/), escaped space and comma.
        let rel = "1 0 0:9 / / rw - overlay overlay rw,lowerdir=l/A,upperdir=my\\040id\\,x/diff,workdir=w\n";
        assert_eq!(
            root_upper_dir(rel.as_bytes()),
            Some(PathBuf::from("my id,x/diff"))
        );
        // A later mount on / hides the overlay.
        let hidden = format!("{DOCKER}9 1402 0:3 / / rw - tmpfs tmpfs rw\n");
        assert_eq!(root_upper_dir(hidden.as_bytes()), None);
        // The host: ext4 root.
        let host = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";
        assert_eq!(root_upper_dir(host.as_bytes()), None);
        assert_eq!(root_upper_dir(b"garbage\n\xff"), None);
    }

    #[test]
    fn relative_upper_dirs_resolve_under_the_overlay_roots() {
        let t = tempfile::tempdir().unwrap();
        let proc = t.path().join("proc");
        fs::create_dir_all(proc.join("7/ns")).unwrap();
        fs::write(proc.join("7/ns/mnt"), "").unwrap();
        fs::write(
            proc.join("7/mountinfo"),
            "1 0 0:9 / / rw - overlay overlay rw,lowerdir=l/A,upperdir=abc/diff,workdir=abc/work\n",
        )
        .unwrap();
        let roots = [
            t.path().join("docker/overlay2"),
            t.path().join("agent/overlay2"),
        ];
        fs::create_dir_all(roots[1].join("abc/diff")).unwrap();
        assert_eq!(
            upper_dir(&proc, 7, None, &roots),
            Some(roots[1].join("abc/diff"))
        );
        // Still in the host's mount namespace: not yet the container's root.
        let host = fs::metadata(proc.join("7/ns/mnt")).unwrap().ino();
        assert_eq!(upper_dir(&proc, 7, Some(host), &roots), None);
        assert_eq!(upper_dir(&proc, 8, None, &roots), None, "no such task");
        // Only the runtimes' layer directories: not some directory a task names.
        fs::write(
            proc.join("7/mountinfo"),
            "1 0 0:9 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/etc,workdir=/w\n",
        )
        .unwrap();
        assert_eq!(upper_dir(&proc, 7, None, &roots), None);
    }

    #[test]
    fn the_walk_counts_what_du_counts() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("diff");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/big"), vec![1u8; 1 << 20]).unwrap();
        fs::write(root.join("small"), b"x").unwrap();
        fs::hard_link(root.join("small"), root.join("a/again")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let mut limit = RateLimit::new(1_000_000);
        let (bytes, inodes) = walk(&root, &mut limit).unwrap();
        // root, a, b, big, small (linked twice, once), link.
        assert_eq!(inodes, 6);
        let du = std::process::Command::new("du")
            .args(["-s", "--block-size=1"])
            .arg(&root)
            .output()
            .unwrap();
        let du: u64 = String::from_utf8_lossy(&du.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(bytes, du);
        let mut devices = HashMap::new();
        let usage = measure(&root, &mut devices, &mut limit).unwrap();
        assert_eq!(usage.usage_bytes, du);
        assert!(usage.limit_bytes > du && usage.inodes_free > 0);
        assert!(!usage.device.is_empty());
    }

    #[test]
    fn the_walker_publishes_and_forgets() {
        let t = tempfile::tempdir().unwrap();
        let proc = t.path().join("proc");
        for pid in [1, 5] {
            fs::create_dir_all(proc.join(format!("{pid}/ns"))).unwrap();
            fs::write(proc.join(format!("{pid}/ns/mnt")), "").unwrap();
        }
        let upper = t.path().join("layer/diff");
        fs::create_dir_all(&upper).unwrap();
        fs::write(upper.join("f"), vec![0u8; 100_000]).unwrap();
        fs::write(
            proc.join("5/mountinfo"),
            format!(
                "1 0 0:9 / / rw - overlay overlay rw,upperdir={},workdir=w\n",
                upper.display()
            ),
        )
        .unwrap();
        let walker = UsageWalker::start(WalkerConfig {
            proc_root: proc,
            interval: Duration::from_millis(100),
            overlay_roots: vec![],
            max_stats_per_sec: 100_000,
        })
        .unwrap();
        walker.want([("/docker/x", 5)].into_iter());
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            if let Some(u) = walker.usage("/docker/x") {
                break u;
            }
            assert!(Instant::now() < deadline, "no result");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(first.usage_bytes >= 100_000, "{first:?}");
        fs::write(upper.join("g"), vec![0u8; 1 << 20]).unwrap();
        loop {
            let u = walker.usage("/docker/x").unwrap();
            if u.usage_bytes >= first.usage_bytes + (1 << 20) {
                assert_eq!(u.inodes_used, 3);
                break;
            }
            assert!(Instant::now() < deadline, "growth not seen: {u:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        walker.want(std::iter::empty());
        assert_eq!(walker.usage("/docker/x"), None);
    }
}
