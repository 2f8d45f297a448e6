//! The spec's `hooks`, run as the runtime spec says: each hook's `path` with
//! its `args` (the first being its argv[0]) and `env` only, the container's
//! state JSON on its stdin, killed after its `timeout` seconds. A failing
//! prestart, createRuntime or createContainer hook fails the create; a failing
//! poststart or poststop hook is only reported (the container has started, or
//! is gone).

use super::super::{Error, Result};
use oci_spec::runtime::{Hook, Spec};
use std::io::Write;
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
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {}: {e}", path.display())),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{}: timed out", path.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", path.display()))?;
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
