//! Runs the guest under `qemu-system-x86_64 -accel tcg` (KVM hangs on these hosts)
//! with the serial console on a pipe: every line is echoed live and kept for parsing.
//! qemu dies with the xtask (PR_SET_PDEATHSIG), on timeout, and on every error path.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Machine<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
    /// A raw disk image the guest sees as /dev/vda (the fixture capture writes to it).
    pub disk: Option<PathBuf>,
    pub timeout: Duration,
    /// Where the whole console log is written as it arrives.
    pub log: &'a Path,
}

/// How the run ended.
pub struct Outcome {
    pub console: String,
    pub timed_out: bool,
    pub exit: Option<std::process::ExitStatus>,
    pub elapsed: Duration,
}

/// Kills and reaps qemu when dropped, whatever path the caller leaves by.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Machine<'_> {
    pub fn run(&self) -> anyhow::Result<Outcome> {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
        ])
        .args(["-m", &self.memory_mib.to_string()])
        .args(["-smp", &self.cpus.to_string()])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(self.kernel)
        .arg("-initrd")
        .arg(self.initramfs)
        // loglevel=3 keeps kernel chatter (OOM reports, …) from splitting the
        // result lines; the guest prints dmesg itself when a test fails.
        .args([
            "-append",
            "console=ttyS0 panic=-1 oops=panic loglevel=3 rdinit=/init",
        ]);
        if let Some(disk) = &self.disk {
            cmd.arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", disk.display()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (Debian package qemu-system-x86)")?;
        let mut guard = Guard(child);
        let stdout = guard.0.stdout.take().expect("piped stdout");
        let stderr = guard.0.stderr.take().expect("piped stderr");

        let (tx, rx) = mpsc::channel::<String>();
        let err_tx = tx.clone();
        let out_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = strip_ansi(String::from_utf8_lossy(&line).trim_end_matches('\r'));
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(format!("[qemu] {line}"));
            }
        });

        let mut log = std::fs::File::create(self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        let mut console = String::new();
        let deadline = start + self.timeout;
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                timed_out = true;
                break;
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(500))) {
                Ok(line) => {
                    eprintln!("{line}");
                    writeln!(log, "{line}")?;
                    console.push_str(&line);
                    console.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both pipes closed: qemu has exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let exit = if timed_out {
            let _ = guard.0.kill();
            None
        } else {
            Some(guard.0.wait().context("waiting for qemu")?)
        };
        drop(guard);
        let _ = out_thread.join();
        let _ = err_thread.join();
        if let Some(status) = exit
            && !status.success()
            && console.is_empty()
        {
            bail!("qemu-system-x86_64 failed ({status}) before the guest printed anything");
        }
        Ok(Outcome {
            console,
            timed_out,
            exit,
            elapsed: start.elapsed(),
        })
    }
}

/// Drops ANSI escape sequences (ESC [ … final byte): the guest console is a tty, so
/// log output comes colored, which the saved log and the parser do not want.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strip_ansi() {
        assert_eq!(
            super::strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ok"),
            "2026  INFO ok"
        );
        assert_eq!(super::strip_ansi("plain"), "plain");
    }
}
