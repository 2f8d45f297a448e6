//! `agent serve` as a child process, stopped on drop.

use super::*;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
