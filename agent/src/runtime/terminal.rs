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

/// Sends a pty master to the caller's console socket (`--console-socket`),
/// as runc does: one message whose data is the terminal's name and whose
/// `SCM_RIGHTS` carries the descriptor (containerd's shim and `runc`'s
/// `recvtty` read it this way).
pub fn send_to_console_socket(socket: &std::path::Path, master: BorrowedFd<'_>) -> Result<()> {
    use super::IoContext;
    let stream = std::os::unix::net::UnixStream::connect(socket).at("connect", socket)?;
    let name = b"/dev/ptmx";
    let mut iov = libc::iovec {
        iov_base: name.as_ptr() as *mut libc::c_void,
        iov_len: name.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: `msg` has a control buffer of CMSG_SPACE(one fd) bytes, so the
    // first header exists and its data holds one descriptor; `iov` and
    // `control` outlive the sendmsg call.
    let ret = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, master.as_raw_fd());
        libc::sendmsg(stream.as_raw_fd(), &msg, 0)
    };
    nix::errno::Errno::result(ret)
        .map(drop)
        .at("send the terminal to", socket)
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

/// What the relay connects.
pub struct Relay<'a> {
    /// What the container writes: the pty master, or the read end of its
    /// output pipe.
    pub from: BorrowedFd<'a>,
    /// The pty master when the container has a terminal (window size, EOF).
    pub tty: Option<BorrowedFd<'a>>,
    /// The caller's input (`-i`); `None`: nothing is read.
    pub input: Option<BorrowedFd<'a>>,
    /// Where input goes: the pty master, or the container's stdin pipe.
    pub input_to: Option<BorrowedFd<'a>>,
    /// Where the container's output goes (the caller's stdout, or the log).
    pub output: &'a mut dyn Write,
    /// The terminal whose window size the container's follows.
    pub size_from: Option<BorrowedFd<'a>>,
    /// `agent attach` clients of a detached container.
    pub attach: Option<&'a mut super::attach::AttachServer>,
}

/// What ended a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The process's exit.
    pub exit: sys::Exit,
    /// Whether one of the forwarded signals was received (the user stopping it).
    pub signalled: bool,
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

const READY: libc::c_short = libc::POLLIN | libc::POLLHUP | libc::POLLERR;

/// `read(2)` into `buf`; `None` at end of file or on error.
pub(super) fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<usize> {
    loop {
        // SAFETY: reading into a buffer we own from a borrowed descriptor.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if r > 0 {
            return Some(r as usize);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// Relays until `pid` exits and its output is drained. `forward` are signals
/// (blocked by the caller, with SIGWINCH and SIGCHLD) sent on to `pid`.
pub fn relay(pid: i32, forward: &[i32], io: Relay<'_>) -> Result<Ended> {
    let Relay {
        from,
        tty,
        mut input,
        input_to,
        output,
        size_from,
        mut attach,
    } = io;
    let mut watched = forward.to_vec();
    watched.extend([libc::SIGWINCH, libc::SIGCHLD]);
    let mut sigs = signalfd(&watched)?;
    if let (Some(t), Some(size)) = (tty, size_from.and_then(window_size)) {
        set_window_size(t, size)?;
    }
    let mut buf = [0u8; 8192];
    let mut exited = None;
    let mut signalled = false;
    let mut from_open = true;
    loop {
        if exited.is_none()
            && let Some((_, exit)) = sys::waitpid(pid, libc::WNOHANG)?
        {
            exited = Some(exit);
        }
        let mut fds = vec![pollfd(from.as_raw_fd()), pollfd(sigs.as_raw_fd())];
        if !from_open {
            fds[0].fd = -1;
        }
        let input_at = fds.len();
        if let Some(i) = input {
            fds.push(pollfd(i.as_raw_fd()));
        }
        let attach_at = fds.len();
        if let Some(a) = attach.as_deref() {
            fds.extend(a.poll_fds().into_iter().map(pollfd));
        }
        // After the exit, drain what is still buffered, then stop.
        let timeout = if exited.is_some() { 0 } else { 1000 };
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = Error::last_os("poll");
            if matches!(
                e,
                Error::Sys {
                    source: nix::errno::Errno::EINTR,
                    ..
                }
            ) {
                continue;
            }
            return Err(e);
        }
        let mut got_output = false;
        if from_open && fds[0].revents & READY != 0 {
            match read_fd(from, &mut buf) {
                Some(r) => {
                    got_output = true;
                    let _ = output.write_all(&buf[..r]);
                    let _ = output.flush();
                    if let Some(a) = attach.as_deref_mut() {
                        a.broadcast(&buf[..r]);
                    }
                }
                // EIO on a pty: every slave descriptor is closed; EOF on a pipe.
                None => from_open = false,
            }
        }
        if let Some(exit) = exited
            && (!got_output || !from_open)
        {
            return Ok(Ended { exit, signalled });
        }
        if fds[1].revents & libc::POLLIN != 0 {
            for sig in read_signals(&mut sigs) {
                match sig {
                    libc::SIGCHLD => {}
                    libc::SIGWINCH => {
                        if let (Some(t), Some(size)) = (tty, size_from.and_then(window_size)) {
                            let _ = set_window_size(t, size);
                        }
                    }
                    other => {
                        signalled = true;
                        let _ = sys::kill(pid, other);
                    }
                }
            }
        }
        if let Some(i) = input
            && fds[input_at].revents & READY != 0
        {
            match read_fd(i, &mut buf) {
                Some(r) => {
                    if let Some(to) = input_to {
                        write_all_fd(to, &buf[..r]);
                    }
                }
                None => {
                    // End of input: on a terminal, its EOF character (Ctrl-D).
                    if let Some(t) = tty {
                        write_all_fd(t, &[4]);
                    }
                    input = None;
                }
            }
        }
        if let Some(a) = attach.as_deref_mut() {
            let ready: Vec<bool> = fds[attach_at..]
                .iter()
                .map(|p| p.revents & READY != 0)
                .collect();
            a.service(&ready, input_to, tty);
        }
    }
}

/// Writes all of `data` to `fd`, giving up on an error.
pub(super) fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a slice we own to a borrowed descriptor.
        let w = unsafe {
            libc::write(
                fd.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
            )
        };
        if w < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if w <= 0 {
            return;
        }
        data = &data[w as usize..];
    }
}

/// The caller's terminal (raw with `-i`) relayed to the container's `master`
/// until `pid` exits: `launch -t` and `exec -t` in the foreground.
pub fn relay_caller(
    master: &OwnedFd,
    pid: i32,
    interactive: bool,
    forward: &[i32],
) -> Result<Ended> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let _raw = if interactive {
        RawMode::enter(stdin.as_fd())
    } else {
        None
    };
    let mut out = stdout.lock();
    relay(
        pid,
        forward,
        Relay {
            from: master.as_fd(),
            tty: Some(master.as_fd()),
            input: interactive.then(|| stdin.as_fd()),
            input_to: Some(master.as_fd()),
            output: &mut out,
            size_from: Some(if interactive {
                stdin.as_fd()
            } else {
                stdout.as_fd()
            }),
            attach: None,
        },
    )
}
