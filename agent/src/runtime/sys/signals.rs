//! Signal masks, waits and dispositions, by number, so that real-time signals
//! (`SIGRTMIN+n`, which nix's `Signal` cannot name) pass as the others do.

use crate::runtime::{Error, Result, SysContext};
use nix::errno::Errno;

/// Blocks (`how = SIG_BLOCK`), unblocks or sets the signal mask to `sigs`; an empty
/// slice with `SIG_SETMASK` clears the mask.
pub fn sigmask(how: libc::c_int, sigs: &[i32]) -> Result<()> {
    let set = sigset(sigs);
    // SAFETY: `set` is an initialised sigset; the old-set pointer may be null.
    let ret = unsafe { libc::sigprocmask(how, &set, std::ptr::null_mut()) };
    Errno::result(ret).map(drop).sys("sigprocmask")
}

pub(in crate::runtime) fn sigset(sigs: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset only writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Every catchable signal (for blocking all of them in an init process).
pub fn all_signals() -> Vec<i32> {
    (1..=64)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP && !(32..=33).contains(&s))
        .collect()
}

/// Waits up to `timeout` for one of the blocked `sigs`; `Ok(None)` on timeout.
pub fn sigtimedwait(sigs: &[i32], timeout: std::time::Duration) -> Result<Option<i32>> {
    let set = sigset(sigs);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are initialised and outlive the call; siginfo may be null.
    let ret = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    match Errno::result(ret) {
        Ok(sig) => Ok(Some(sig)),
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(source) => Err(Error::Sys {
            op: "sigtimedwait",
            source,
        }),
    }
}

/// Resets every catchable signal's disposition to the default.
pub fn reset_signal_handlers() {
    for s in all_signals() {
        // SAFETY: setting SIG_DFL is always valid for catchable signals; errors for
        // reserved numbers are ignored.
        unsafe {
            libc::signal(s, libc::SIG_DFL);
        }
    }
}
