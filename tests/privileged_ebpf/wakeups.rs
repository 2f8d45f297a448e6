//! When the reader wakes: a cgroup mkdir is handled at once, also inside the
//! batch window that an exec just opened.

use super::*;
use agent::cgroup::Hierarchy;
use agent::container::ContainerLookup;
use parking_lot::Mutex;
use tokio::sync::broadcast;

/// Knows no container; remembers each cgroup mkdir it is told of, and when.
#[derive(Default)]
struct MkdirRecorder {
    learned: Mutex<Vec<(String, Instant)>>,
}

impl ContainerLookup for MkdirRecorder {
    fn container_for_cgroup_path(&self, _path: &str) -> Option<ContainerLabels> {
        None
    }

    fn learn_cgroup(&self, _id: u64, path: &str) {
        self.learned.lock().push((path.to_owned(), Instant::now()));
    }
}

/// cgroup2 directories made by the test, removed on drop (deepest first).
struct Dirs(Vec<PathBuf>);

impl Drop for Dirs {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A short-lived container's name is read from its runtime's files when its
/// cgroup mkdir is handled, so that record must not wait for the batch window
/// (50 ms) the reader keeps after a drain for the rest of a burst: each round
/// execs, waits until the reader has handed that exec over and its drain is
/// over, and makes a cgroup2 directory at once. A reader that sleeps
/// through its window learns each one ~50 ms late; the best of five rounds must
/// be well under that (the best, so that one stall of this loaded machine does
/// not fail the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cgroup_mkdir_is_handled_at_once_inside_a_batch_window() {
    let Ok(hierarchy) = Hierarchy::detect_host() else {
        skip("wakeups: no cgroup hierarchy");
        return;
    };
    let Some(unified) = hierarchy.unified_dir("/").filter(|d| d.is_dir()) else {
        skip("wakeups: no cgroup2 mount");
        return;
    };
    let recorder = Arc::new(MkdirRecorder::default());
    let config = TracerConfig {
        trace_mounts: false,
        ..TracerConfig::default()
    };
    let Some(tracer) = start(config, Arc::clone(&recorder) as Arc<dyn ContainerLookup>).await
    else {
        return;
    };
    if !tracer
        .programs()
        .iter()
        .any(|p| p.attached && p.hook.ends_with("/cgroup_mkdir"))
    {
        skip("wakeups: no cgroup_mkdir program attached");
        return;
    }
    let top = format!("agent-wakeup-test-{}", std::process::id());
    let mut dirs = Dirs(vec![unified.join(&top)]);
    std::fs::create_dir(&dirs.0[0]).unwrap();
    let mut rx = tracer.subscribe();
    let mut latencies = Vec::new();
    for round in 0..5 {
        let marker = format!("{top}-exec{round}");
        let status = std::process::Command::new(BUSYBOX)
            .args(["true", &marker])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Ok(e)) if e.exec.as_ref().is_some_and(|x| x.argv.contains(&marker)) => break,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                other => panic!("exec {marker} not delivered: {other:?}"),
            }
        }
        // The drain that handed it over may still be going (other processes'
        // records): the mkdir comes once it is over.
        let mut received = tracer.received();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = tracer.received();
            if now == received {
                break;
            }
            received = now;
        }
        let rel = format!("/{top}/c{round}");
        let dir = unified.join(rel.trim_start_matches('/'));
        let made = Instant::now();
        std::fs::create_dir(&dir).unwrap();
        dirs.0.push(dir);
        let deadline = made + Duration::from_secs(3);
        let learned = loop {
            let at = recorder
                .learned
                .lock()
                .iter()
                .find(|(p, _)| *p == rel)
                .map(|(_, at)| *at);
            if let Some(at) = at {
                break at;
            }
            assert!(Instant::now() < deadline, "{rel} never learned");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(learned.saturating_duration_since(made));
        // Past the window before the next round.
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    eprintln!("cgroup mkdir learned after {latencies:?}");
    let best = latencies.iter().min().copied().unwrap_or_default();
    assert!(
        best < Duration::from_millis(25),
        "every mkdir waited for the batch window: {latencies:?}"
    );
}
