//! `agent serve --events-file PATH`: every traced event as one JSON line in a
//! file, for log shippers (Vector, fluent-bit, Promtail), rotated by size.
//!
//! The lines are the control socket's [`EventRecord`]s, without argv unless
//! asked for. The file is created 0600 (argv and mount paths can be secrets).
//! At `max_bytes` it is renamed to `PATH.1` (`PATH.1` to `PATH.2`, …, the
//! oldest beyond `keep` removed) and a new `PATH` is started, the way
//! logrotate's `create` mode and the shippers' file inputs expect. A line is
//! never split across files, and rotation happens between lines in the one
//! writer thread, so nothing is lost across it.

use crate::ebpf::EventRecord;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Where and how the events file is written.
#[derive(Clone, Debug)]
pub struct EventsFileConfig {
    pub path: PathBuf,
    /// A file is rotated before a line would take it past this size.
    pub max_bytes: u64,
    /// Rotated files kept (`PATH.1` … `PATH.<keep>`); 0 keeps none.
    pub keep: u32,
    /// Keep each exec's argv in its line (off: `argv` is empty).
    pub argv: bool,
}

/// Errors of the events file.
#[derive(Debug, thiserror::Error)]
pub enum EventsFileError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rotate {from} to {to}")]
    Rotate {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("events file size limit {0} is below one line (4 KiB at least)")]
    TooSmall(u64),
}

/// The smallest `max_bytes` accepted: a few of the largest lines.
const MIN_MAX_BYTES: u64 = 4096;

/// The open file and its size so far.
struct EventsFile {
    config: EventsFileConfig,
    out: BufWriter<File>,
    size: u64,
}

fn open(path: &Path) -> Result<(File, u64), EventsFileError> {
    let err = |source| EventsFileError::Open {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    // A file that was there before keeps its mode on open: make it 0600 too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    Ok((file, size))
}

/// `PATH.n`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl EventsFile {
    fn open(config: EventsFileConfig) -> Result<Self, EventsFileError> {
        if config.max_bytes < MIN_MAX_BYTES {
            return Err(EventsFileError::TooSmall(config.max_bytes));
        }
        let (file, size) = open(&config.path)?;
        Ok(EventsFile {
            config,
            out: BufWriter::new(file),
            size,
        })
    }

    fn write_err(&self, source: std::io::Error) -> EventsFileError {
        EventsFileError::Write {
            path: self.config.path.clone(),
            source,
        }
    }

    /// Appends one line, rotating first if it would not fit.
    fn append(&mut self, record: &EventRecord) -> Result<(), EventsFileError> {
        let mut line = if self.config.argv || record.exec.is_none() {
            serde_json::to_vec(record)
        } else {
            let mut r = record.clone();
            if let Some(e) = &mut r.exec {
                e.argv.clear();
            }
            serde_json::to_vec(&r)
        }
        .map_err(|e| self.write_err(e.into()))?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.config.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(&line).map_err(|e| self.write_err(e))?;
        self.size += len;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EventsFileError> {
        self.out.flush().map_err(|e| self.write_err(e))
    }

    /// PATH.(keep-1) → PATH.keep, …, PATH → PATH.1, then a new PATH.
    fn rotate(&mut self) -> Result<(), EventsFileError> {
        self.flush()?;
        let path = self.config.path.clone();
        let keep = self.config.keep;
        if keep == 0 {
            let _ = std::fs::remove_file(&path);
        } else {
            let _ = std::fs::remove_file(rotated(&path, keep));
            for n in (1..keep).rev() {
                let from = rotated(&path, n);
                if from.exists() {
                    let to = rotated(&path, n + 1);
                    std::fs::rename(&from, &to).map_err(|source| EventsFileError::Rotate {
                        from,
                        to,
                        source,
                    })?;
                }
            }
            let to = rotated(&path, 1);
            std::fs::rename(&path, &to).map_err(|source| EventsFileError::Rotate {
                from: path.clone(),
                to,
                source,
            })?;
        }
        let (file, size) = open(&path)?;
        self.out = BufWriter::new(file);
        self.size = size;
        Ok(())
    }
}

/// Opens the file (an error here is the caller's to report: a bad path stops
/// `agent serve` at start-up) and writes every event from `rx` to it on a
/// thread of its own until the sender is gone. Lines are flushed whenever
/// the queue is empty, so a shipper sees them within moments.
pub fn spawn(
    config: EventsFileConfig,
    rx: broadcast::Receiver<Arc<EventRecord>>,
) -> Result<std::thread::JoinHandle<()>, EventsFileError> {
    let file = EventsFile::open(config)?;
    std::thread::Builder::new()
        .name("events-file".into())
        .spawn(move || write_loop(file, rx))
        .map_err(|source| EventsFileError::Open {
            path: PathBuf::from("<events-file thread>"),
            source,
        })
}

fn write_loop(mut file: EventsFile, mut rx: broadcast::Receiver<Arc<EventRecord>>) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut failed = false;
    let mut report = |file: &EventsFile, result: Result<(), EventsFileError>| match result {
        Ok(()) => failed = false,
        // One warning per run of failures (a full disk would say it per line).
        Err(e) if !failed => {
            failed = true;
            tracing::warn!(path = %file.config.path.display(), error = %crate::ebpf::loader::error_chain(&e), "events file: write failed; lines are dropped until it works again");
        }
        Err(_) => {}
    };
    loop {
        let first = rx.blocking_recv();
        let mut next = match first {
            Ok(r) => Some(r),
            Err(RecvError::Closed) => break,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "events file: fell behind, events skipped");
                None
            }
        };
        // Drain what is queued, then flush once.
        loop {
            if let Some(r) = next.take() {
                let result = file.append(&r);
                report(&file, result);
            }
            match rx.try_recv() {
                Ok(r) => next = Some(r),
                Err(TryRecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "events file: fell behind, events skipped");
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    let result = file.flush();
                    report(&file, result);
                    return;
                }
            }
        }
        let result = file.flush();
        report(&file, result);
    }
    let result = file.flush();
    report(&file, result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ContainerLabels;
    use crate::ebpf::events::{Event, ExecInfo, ProcessInfo};

    fn exec(i: u32) -> Arc<EventRecord> {
        let process = ProcessInfo {
            boot_ns: u64::from(i),
            pid: i,
            tgid: i,
            ppid: 1,
            ns_pid: i,
            uid: 0,
            gid: 0,
            comm: "sh".into(),
            cgroup_id: 1,
            mnt_ns: 1,
            pid_ns: 1,
            net_ns: 1,
            uts_ns: 1,
        };
        let event = Event::Exec(
            process,
            ExecInfo {
                filename: "/bin/sh".into(),
                argv: vec!["sh".into(), "-c".into(), format!("secret-{i}")],
                argv_truncated: false,
            },
        );
        Arc::new(EventRecord::new(&event, ContainerLabels::host(), 0))
    }

    fn lines(path: &Path) -> Vec<EventRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn rotates_at_its_size_loses_nothing_and_is_0600() {
        const N: u32 = 2000;
        const MAX: u64 = 64 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let config = EventsFileConfig {
            path: path.clone(),
            max_bytes: MAX,
            keep: 100,
            argv: false,
        };
        let (tx, rx) = broadcast::channel(N as usize);
        let writer = spawn(config, rx).unwrap();
        for i in 0..N {
            tx.send(exec(i)).unwrap();
        }
        drop(tx);
        writer.join().unwrap();

        // Oldest first: PATH.k … PATH.1, then PATH.
        let mut files: Vec<PathBuf> = (1..=100)
            .map(|n| rotated(&path, n))
            .filter(|p| p.exists())
            .collect();
        assert!(files.len() >= 3, "rotated {} times", files.len());
        files.reverse();
        files.push(path.clone());
        let mut seen = Vec::new();
        for f in &files {
            let meta = std::fs::metadata(f).unwrap();
            assert!(meta.len() <= MAX, "{} is {} bytes", f.display(), meta.len());
            // Full: the next line would not have fitted.
            if f != &path {
                assert!(
                    meta.len() > MAX - 400,
                    "{} is {} bytes",
                    f.display(),
                    meta.len()
                );
            }
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", f.display());
            seen.extend(lines(f));
        }
        let pids: Vec<u32> = seen.iter().map(|r| r.process.tgid).collect();
        assert_eq!(
            pids,
            (0..N).collect::<Vec<_>>(),
            "every line, once, in order"
        );
        assert!(
            seen.iter()
                .all(|r| r.exec.as_ref().unwrap().argv.is_empty())
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("secret"), "argv stays out of the file");
    }

    #[test]
    fn keeps_argv_when_asked_and_only_keep_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        // A file from before, world-readable: it is appended to and made 0600.
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = EventsFileConfig {
            path: path.clone(),
            max_bytes: MIN_MAX_BYTES,
            keep: 2,
            argv: true,
        };
        let (tx, rx) = broadcast::channel(1024);
        let writer = spawn(config, rx).unwrap();
        for i in 0..200 {
            tx.send(exec(i)).unwrap();
        }
        drop(tx);
        writer.join().unwrap();
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let last = lines(&path);
        assert_eq!(last.last().unwrap().process.tgid, 199);
        assert_eq!(
            last.last().unwrap().exec.as_ref().unwrap().argv,
            ["sh", "-c", "secret-199"]
        );
        let too_small = EventsFileConfig {
            path,
            max_bytes: 100,
            keep: 1,
            argv: false,
        };
        let (_tx, rx) = broadcast::channel(1);
        assert!(matches!(
            spawn(too_small, rx),
            Err(EventsFileError::TooSmall(100))
        ));
    }
}
