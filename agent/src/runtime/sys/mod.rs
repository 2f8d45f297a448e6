//! The runtime's syscalls: a thin layer over nix that names each failure (the
//! path, or the operation) in the runtime's [`Error`].
//!
//! Where nix falls short, rustix (already built in through xattr) stands in
//! safely: `capset` v3 with all three sets at once, `open_tree` and
//! `move_mount`, and `waitpid`, whose status keeps a death by a real-time signal.
//! What stays hand-written is what neither has: `clone3`, `mount_setattr`,
//! `seccomp(2)`, the loopback interface's ioctls, `dup2`/`dup3` onto a bare
//! descriptor number, and the calls that carry real-time signals (nix's `Signal`
//! has none, and rustix builds one only through an `unsafe` constructor), which
//! `agent kill` and the supervisor's forwarding send: `kill`, `sigprocmask`,
//! `sigtimedwait`, `signal`. Each such `unsafe` block says why it is sound.

use super::{Error, Result};

mod files;
mod mount;
mod namespaces;
mod process;
mod signals;

pub use files::*;
pub use mount::*;
pub use namespaces::*;
pub use process::*;
pub use signals::*;

/// Fills `buf` from the kernel's random pool.
pub fn getrandom(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(Error::Random)
}
