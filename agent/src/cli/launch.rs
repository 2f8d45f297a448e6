//! `agent launch`: run a command in a container made from an image.

use super::state_dir::StateDir;
use crate::runtime::capabilities::CapArg;
use crate::runtime::restart::RestartPolicy;
use crate::runtime::spec::LaunchOptions;
use crate::runtime::supervisor::{self, Launched};
use crate::runtime::units::{ByteSize, Cpus, MemorySwap, Network, PidsLimit, SecurityOpt};
use crate::runtime::volumes::{MountArg, TmpfsArg, VolumeArg};
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct LaunchArgs {
    #[command(flatten)]
    state: StateDir,
    /// Container name (unique).
    #[arg(long)]
    name: Option<String>,
    /// Memory limit, e.g. 256Mi.
    #[arg(long, short = 'm', allow_hyphen_values = true)]
    memory: Option<ByteSize>,
    /// Memory plus swap limit (-1: unlimited swap).
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<MemorySwap>,
    /// CPU quota in CPUs, from 0.01 to the number of CPUs, e.g. 0.5.
    #[arg(long, allow_hyphen_values = true)]
    cpus: Option<Cpus>,
    /// Maximum number of processes and threads.
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<PidsLimit>,
    /// Hostname inside the container (default: the short id).
    #[arg(long)]
    hostname: Option<String>,
    /// Environment variable KEY=VALUE (or KEY to copy it from here).
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// User (name, uid, name:group or uid:gid) from the image's /etc/passwd.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Label KEY=VALUE.
    #[arg(long = "label", short = 'l')]
    labels: Vec<String>,
    /// Network: none (own namespace, loopback only) or host.
    #[arg(long, default_value = "none")]
    network: Network,
    /// Keep stdin open (without it the container's stdin is /dev/null).
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Allocate a pseudo-terminal (with -i: this terminal's input, raw; Ctrl-C
    /// reaches the container).
    #[arg(long, short = 't')]
    tty: bool,
    /// Run in the background; output goes to `agent logs`.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run a tiny init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    init: bool,
    /// Add a capability to Docker's default set (e.g. NET_ADMIN, or ALL).
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<CapArg>,
    /// Drop a capability from the default set (e.g. CHOWN, or ALL).
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<CapArg>,
    /// All of the host's capabilities, no seccomp filter, no masked /proc paths.
    #[arg(long)]
    privileged: bool,
    /// Read-only root filesystem (writable tmpfs on /tmp, /run and /var/tmp).
    #[arg(long)]
    read_only: bool,
    /// seccomp=unconfined, seccomp=PATH.json, or no-new-privileges[=false].
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<SecurityOpt>,
    /// Run in a user namespace: root inside is USER's first subordinate id from
    /// /etc/subuid (and GROUP's, or USER's, from /etc/subgid).
    #[arg(long = "userns-remap", value_name = "USER[:GROUP]")]
    userns_remap: Option<String>,
    /// Restart policy: no, on-failure[:N] (at most N restarts), always or
    /// unless-stopped. `agent stop`, `kill` and `rm -f` end it.
    #[arg(long, default_value = "no", value_name = "POLICY")]
    restart: RestartPolicy,
    /// Volume: HOST:CTR[:ro] binds a host path (made if missing), NAME:CTR[:ro]
    /// a named volume of the store (made if missing, kept after rm).
    #[arg(long = "volume", short = 'v', value_name = "SRC:CTR[:ro]")]
    volumes: Vec<VolumeArg>,
    /// A tmpfs at CTR, e.g. /run:size=64m,mode=1777 (noexec,nosuid,nodev).
    #[arg(long, value_name = "CTR[:OPTS]")]
    tmpfs: Vec<TmpfsArg>,
    /// type=bind|volume|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…]
    #[arg(long = "mount", value_name = "SPEC")]
    mounts: Vec<MountArg>,
    #[command(flatten)]
    pull: super::pull::LaunchPull,
    /// Image reference or id.
    image: String,
    /// Command and arguments (default: the image's Entrypoint and Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(args: LaunchArgs) -> anyhow::Result<ExitCode> {
    let paths = args.state.open()?;
    args.pull.ensure(&paths, &args.image)?;
    let opts = LaunchOptions {
        name: args.name,
        memory: args.memory,
        memory_swap: args.memory_swap,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        hostname: args.hostname,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        labels: args.labels,
        network: args.network,
        detach: args.detach,
        auto_remove: args.rm,
        init: args.init,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        privileged: args.privileged,
        read_only: args.read_only,
        security_opts: args.security_opt,
        userns_remap: args.userns_remap,
        restart: args.restart,
        interactive: args.interactive,
        tty: args.tty,
        mounts: args
            .volumes
            .into_iter()
            .map(|v| v.0)
            .chain(args.mounts.into_iter().map(|m| m.0))
            .chain(args.tmpfs.into_iter().map(|t| t.0))
            .collect(),
        image: args.image,
        command: args.command,
    };
    Ok(report(supervisor::launch(&paths, &opts)?))
}

/// What the command line says of a launch: a detached container's id, or the
/// container's own exit code.
pub(super) fn report(launched: Launched) -> ExitCode {
    match launched {
        Launched::Detached { id } => {
            println!("{id}");
            ExitCode::SUCCESS
        }
        Launched::Exited { exit_code, .. } => ExitCode::from(exit_code.clamp(0, 255) as u8),
    }
}
