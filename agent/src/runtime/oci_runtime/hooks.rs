//! The spec's `hooks`, run as the runtime spec says: each hook's `path` with
//! its `args` (the first being its argv[0]) and `env` only, the container's
//! state JSON on its stdin, killed after its `timeout` seconds. A failing
//! prestart, createRuntime or createContainer hook fails the create; a failing
//! poststart or poststop hook is only reported (the container has started, or
//! is gone).

use super::super::{Error, Result, sys};
use oci_spec::runtime::{Hook, Spec};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The points of the lifecycle at which hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// After the namespaces exist, before the container's set-up (deprecated
    /// by the spec, still what Docker's network set-up uses).
    Prestart,
    /// Same moment as prestart, in the runtime's namespaces.
    CreateRuntime,
    /// After `start` released the process.
    Poststart,
    /// After the container is deleted.
    Poststop,
}

impl Stage {
    fn hooks(self, spec: &Spec) -> Vec<Hook> {
        let Some(h) = spec.hooks() else {
            return Vec::new();
        };
        #[allow(deprecated)]
        let list = match self {
            Stage::Prestart => h.prestart(),
            Stage::CreateRuntime => h.create_runtime(),
            Stage::Poststart => h.poststart(),
            Stage::Poststop => h.poststop(),
        };
        list.clone().unwrap_or_default()
    }

    fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }
}

/// Refuses the hooks that run inside the container (createContainer,
/// startContainer): the container's process would have to fork them between
/// its set-up steps, which the agent's child does not do.
pub fn check_supported(spec: &Spec) -> Result<()> {
    let Some(h) = spec.hooks() else {
        return Ok(());
    };
    for (name, list) in [
        ("createContainer", h.create_container()),
        ("startContainer", h.start_container()),
    ] {
        if list.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(Error::Invalid(format!(
                "{name} hooks are not supported (prestart, createRuntime, poststart and poststop are)"
            )));
        }
    }
    Ok(())
}

/// Runs the spec's hooks of `stage` in order with `state` (the state JSON) on
/// their stdin; the first failure ends the run.
pub fn run(spec: &Spec, stage: Stage, state: &[u8]) -> Result<()> {
    for (i, hook) in stage.hooks(spec).iter().enumerate() {
        run_one(hook, state).map_err(|e| {
            Error::Invalid(format!("error running {} hook #{i}: {e}", stage.name()))
        })?;
    }
    Ok(())
}

fn run_one(hook: &Hook, state: &[u8]) -> std::result::Result<(), String> {
    let path = hook.path();
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(path);
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .envs(
            hook.env()
                .iter()
                .flatten()
                .filter_map(|kv| kv.split_once('=')),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    // Its output is drained while it runs, so a talkative hook never blocks.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    for pipe in [
        out_pipe.as_ref().map(|p| p.as_fd()),
        err_pipe.as_ref().map(|p| p.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        sys::set_nonblocking(pipe).map_err(|e| e.to_string())?;
    }
    let status = loop {
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut stdout);
        }
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut stderr);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {}: {e}", path.display())),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{}: timed out", path.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = std::process::Output {
        status,
        stdout,
        stderr,
    };
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}: {}, stdout: {}, stderr: {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
