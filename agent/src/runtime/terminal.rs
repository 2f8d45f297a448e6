//! Terminals for `launch -t` and `exec -t`: a pseudo-terminal whose slave becomes
//! the container process's controlling terminal and stdio, and a relay that
//! copies between it and the caller's terminal (raw mode, so Ctrl-C reaches the
//! container's foreground process group as a byte the pty turns into SIGINT),
//! copies the window size at start and on every SIGWINCH, forwards the
//! terminating signals the caller receives, and ends with the process.
//!
//! The pty is the host's (`/dev/ptmx`): the container's own `/dev/pts` is a new
//! instance, so `tty` inside cannot name it, but `isatty`, `stty` and job
//! control work on the descriptors.

use super::{Error, Result, sys};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A pseudo-terminal pair.
pub struct Pty {
    /// The side the relay reads and writes.
    pub master: OwnedFd,
    /// The side the container process gets as its terminal.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal, both ends close-on-exec (the child dup2s the slave
/// onto 0, 1 and 2, which clears the flag there).
pub fn openpty() -> Result<Pty> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: both out-pointers are valid; name, termios and winsize may be null.
    let ret = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if ret < 0 {
        return Err(Error::last_os("openpty"));
    }
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    let pty = unsafe {
        Pty {
            master: OwnedFd::from_raw_fd(master),
            slave: OwnedFd::from_raw_fd(slave),
        }
    };
    for fd in [&pty.master, &pty.slave] {
        // SAFETY: setting FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(pty)
}

/// In the child, before exec: a new session whose controlling terminal is
/// `slave`, which also becomes stdin, stdout and stderr.
pub fn become_controlling(slave: RawFd) -> Result<()> {
    sys::setsid()?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    let ret = unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) };
    if ret < 0 {
        return Err(Error::last_os("make the pty the controlling terminal"));
    }
    for to in 0..=2 {
        sys::dup2(slave, to)?;
    }
    Ok(())
}

/// The window size of the terminal at `fd`, if it is one.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    // SAFETY: zeroed winsize is valid; TIOCGWINSZ writes into it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `ws` is a valid out-pointer for TIOCGWINSZ.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (ret == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Sets the window size (rows, columns) of the terminal at `fd`; the kernel
/// sends SIGWINCH to its foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, (rows, cols): (u16, u16)) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `ws` is a valid winsize for TIOCSWINSZ.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if ret < 0 {
        return Err(Error::last_os("set the window size"));
    }
    Ok(())
}

/// The caller's terminal in raw mode until dropped.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode on `fd` when it is a terminal; `None` otherwise.
    pub fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        // SAFETY: zeroed termios is valid storage for tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid out-pointer.
        if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios.
        if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the settings read from the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// A signalfd for `sigs` (which the caller has blocked).
fn signalfd(sigs: &[i32]) -> Result<std::fs::File> {
    let set = sys::sigset(sigs);
    // SAFETY: `set` is an initialised sigset; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::last_os("signalfd"));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Reads the pending signal numbers of a signalfd.
fn read_signals(fd: &mut std::fs::File) -> Vec<i32> {
    let mut out = Vec::new();
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    let mut buf = vec![0u8; size * 8];
    while let Ok(n) = fd.read(&mut buf) {
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks_exact(size) {
            // ssi_signo is the first u32 of signalfd_siginfo.
            out.push(u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as i32);
        }
    }
    out
}

/// What the relay does with the caller's side.
pub struct Relay<'a> {
    /// Copied to the pty (`-i`); `None`: nothing is sent.
    pub input: Option<BorrowedFd<'a>>,
    /// Where the pty's output goes.
    pub output: &'a mut dyn Write,
    /// The terminal whose window size is followed (usually stdin or stdout).
    pub size_from: Option<BorrowedFd<'a>>,
}

/// Relays between the caller and `master` until `pid` exits; returns its exit.
/// `forward` are signals (blocked by the caller) sent on to `pid`; SIGWINCH
/// and SIGCHLD must be blocked too.
pub fn relay(master: &OwnedFd, pid: i32, forward: &[i32], io: Relay<'_>) -> Result<sys::Exit> {
    let Relay {
        mut input,
        output,
        size_from,
    } = io;
    let mut watched = forward.to_vec();
    watched.extend([libc::SIGWINCH, libc::SIGCHLD]);
    let mut sigs = signalfd(&watched)?;
    if let Some(size) = size_from.and_then(window_size) {
        set_window_size(master.as_fd(), size)?;
    }
    let mut buf = [0u8; 8192];
    let mut exited = None;
    loop {
        if exited.is_none()
            && let Some((_, exit)) = sys::waitpid(pid, libc::WNOHANG)?
        {
            exited = Some(exit);
        }
        let mut fds = vec![
            libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigs.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if let Some(i) = input {
            fds.push(libc::pollfd {
                fd: i.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // After the exit, drain what the pty still holds, then stop.
        let timeout = if exited.is_some() { 0 } else { 1000 };
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::Sys {
                op: "poll".into(),
                source: e,
            });
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            // SAFETY: reading into a buffer we own from a descriptor we own.
            let r = unsafe {
                libc::read(
                    master.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if r > 0 {
                let _ = output.write_all(&buf[..r as usize]);
                let _ = output.flush();
                continue;
            }
            // EIO: every slave descriptor is closed.
            if let Some(exit) = exited {
                return Ok(exit);
            }
        } else if let Some(exit) = exited {
            return Ok(exit);
        }
        if fds[1].revents & libc::POLLIN != 0 {
            for sig in read_signals(&mut sigs) {
                match sig {
                    libc::SIGCHLD => {}
                    libc::SIGWINCH => {
                        if let Some(size) = size_from.and_then(window_size) {
                            let _ = set_window_size(master.as_fd(), size);
                        }
                    }
                    other => {
                        let _ = sys::kill(pid, other);
                    }
                }
            }
        }
        if let Some(i) = input
            && let Some(p) = fds.get(2)
            && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
        {
            // SAFETY: reading into a buffer we own from a borrowed descriptor.
            let r = unsafe {
                libc::read(
                    i.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if r > 0 {
                write_all_fd(master.as_fd(), &buf[..r as usize]);
            } else {
                // End of input: send the terminal's EOF (Ctrl-D), stop reading.
                write_all_fd(master.as_fd(), &[4]);
                input = None;
            }
        }
    }
}

fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a slice we own to a borrowed descriptor.
        let w = unsafe {
            libc::write(
                fd.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
            )
        };
        if w <= 0 {
            return;
        }
        data = &data[w as usize..];
    }
}
