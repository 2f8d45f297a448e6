//! `agent attach`: the terminal (or output and, with `-i`, input) of a detached
//! container, through its supervisor.
//!
//! The detached supervisor listens on `containers/<id>/attach.sock` (a unix
//! socket only root can reach, like the rest of `containers/`). It sends every
//! client the container's output as it reads it (the log keeps it too), and
//! reads frames from the client: `[kind u8][length u16 BE][payload]`, kind 0
//! input for the container's terminal or stdin, kind 1 a window size (rows,
//! columns, u16 BE each). When a run of the container ends, clients are
//! disconnected; `agent attach` then exits with the container's exit code.

use super::state::{self, Status};
use super::terminal::{self, RawMode};
use super::{Error, IoContext, Paths, Result, sys};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Frame kinds from client to supervisor.
const INPUT: u8 = 0;
const RESIZE: u8 = 1;

/// The socket of container `id`.
pub fn socket_path(paths: &Paths, id: &str) -> PathBuf {
    paths.container(id).join("attach.sock")
}

/// `path` reachable by a name short enough for a unix socket address (108
/// bytes): through `/proc/self/fd/N/` of its directory, held open by the
/// returned handle, so any state root works.
fn short_name(path: &Path) -> Result<(std::fs::File, PathBuf)> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let handle = std::fs::File::open(dir).at("open", dir)?;
    let name = path.file_name().unwrap_or_default();
    let short = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name);
    Ok((handle, short))
}

/// One attached client.
struct Client {
    stream: UnixStream,
    pending: Vec<u8>,
}

/// The supervisor's side.
pub struct AttachServer {
    path: PathBuf,
    listener: UnixListener,
    clients: Vec<Client>,
}

impl AttachServer {
    /// Listens at `path` (root only).
    pub fn bind(path: &Path) -> Result<AttachServer> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let (_dir, short) = short_name(path)?;
        let listener = UnixListener::bind(&short).at("listen", path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).at("chmod", path)?;
        listener
            .set_nonblocking(true)
            .at("set non-blocking", path)?;
        Ok(AttachServer {
            path: path.to_path_buf(),
            listener,
            clients: Vec::new(),
        })
    }

    /// Descriptors to poll: the listener, then each client.
    pub fn poll_fds(&self) -> Vec<RawFd> {
        std::iter::once(self.listener.as_raw_fd())
            .chain(self.clients.iter().map(|c| c.stream.as_raw_fd()))
            .collect()
    }

    /// Sends the container's output to every client; a client that cannot take
    /// it within a second is dropped rather than stall the container.
    pub fn broadcast(&mut self, data: &[u8]) {
        self.clients
            .retain_mut(|c| c.stream.write_all(data).is_ok());
    }

    /// Accepts new clients and handles the frames of those whose descriptor
    /// is ready (`ready` in the order of [`Self::poll_fds`]).
    pub fn service(
        &mut self,
        ready: &[bool],
        input_to: Option<BorrowedFd<'_>>,
        tty: Option<BorrowedFd<'_>>,
    ) {
        let mut keep = Vec::with_capacity(self.clients.len());
        for (i, mut c) in self.clients.drain(..).enumerate() {
            if !ready.get(i + 1).copied().unwrap_or(false) {
                keep.push(c);
                continue;
            }
            let mut buf = [0u8; 4096];
            match c.stream.read(&mut buf) {
                Ok(0) | Err(_) => continue,
                Ok(n) => c.pending.extend_from_slice(&buf[..n]),
            }
            while c.pending.len() >= 3 {
                let len = usize::from(u16::from_be_bytes([c.pending[1], c.pending[2]]));
                if c.pending.len() < 3 + len {
                    break;
                }
                let payload: Vec<u8> = c.pending[3..3 + len].to_vec();
                match c.pending[0] {
                    INPUT => {
                        if let Some(to) = input_to {
                            terminal::write_all_fd(to, &payload);
                        }
                    }
                    RESIZE if payload.len() == 4 => {
                        if let Some(t) = tty {
                            let rows = u16::from_be_bytes([payload[0], payload[1]]);
                            let cols = u16::from_be_bytes([payload[2], payload[3]]);
                            let _ = terminal::set_window_size(t, (rows, cols));
                        }
                    }
                    _ => {}
                }
                c.pending.drain(..3 + len);
            }
            keep.push(c);
        }
        self.clients = keep;
        if ready.first().copied().unwrap_or(false) {
            while let Ok((stream, _)) = self.listener.accept() {
                let ok = stream.set_nonblocking(false).is_ok()
                    && stream
                        .set_write_timeout(Some(Duration::from_secs(1)))
                        .is_ok();
                if ok {
                    self.clients.push(Client {
                        stream,
                        pending: Vec::new(),
                    });
                }
            }
        }
    }

    /// Ends every client's session (a run of the container ended).
    pub fn disconnect_all(&mut self) {
        self.clients.clear();
    }
}

impl Drop for AttachServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Signals the client handles: SIGWINCH (a terminal's size), and without a
/// terminal the ones it passes on to the container (Docker's sig-proxy).
const PROXIED: &[i32] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// `agent attach`: relays this terminal to the container until its run ends;
/// returns its exit code.
pub fn attach(paths: &Paths, key: &str) -> Result<i32> {
    let st = state::find(paths, key)?;
    if !st.is_running() {
        return Err(Error::NotRunning {
            name: st.name.clone(),
        });
    }
    let path = socket_path(paths, &st.id);
    if !st.detached || !path.exists() {
        return Err(Error::Conflict(format!(
            "container {} was not started with -d: its supervisor owns its terminal",
            st.name
        )));
    }
    let (_dir, short) = short_name(&path)?;
    let mut stream = UnixStream::connect(&short).at("connect", &path)?;
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let _raw = if st.tty && st.interactive {
        RawMode::enter(stdin.as_fd())
    } else {
        None
    };
    let mut watched = PROXIED.to_vec();
    watched.push(libc::SIGWINCH);
    sys::sigmask(libc::SIG_BLOCK, &watched)?;
    let send_size = |stream: &mut UnixStream| {
        if let Some((rows, cols)) = terminal::window_size(stdout.as_fd()) {
            let mut p = rows.to_be_bytes().to_vec();
            p.extend_from_slice(&cols.to_be_bytes());
            let _ = stream.write_all(&frame(RESIZE, &p));
        }
    };
    if st.tty {
        send_size(&mut stream);
    }
    let mut input_open = st.interactive;
    let mut out = stdout.lock();
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = vec![libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if input_open {
            fds.push(libc::pollfd {
                fd: stdin.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(Error::last_os("poll"));
        }
        while let Some(sig) = sys::sigtimedwait(&watched, Duration::ZERO)? {
            if sig == libc::SIGWINCH {
                send_size(&mut stream);
            } else if !st.tty
                && let Some(pid) = super::lifecycle::pid_is_container(&st)
            {
                let _ = sys::kill(pid, sig);
            }
        }
        if n <= 0 {
            continue;
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(r) => {
                    let _ = out.write_all(&buf[..r]);
                    let _ = out.flush();
                }
            }
        }
        if input_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match terminal::read_fd(stdin.as_fd(), &mut buf) {
                Some(r) => {
                    for chunk in buf[..r].chunks(u16::MAX as usize) {
                        let _ = stream.write_all(&frame(INPUT, chunk));
                    }
                }
                None => input_open = false,
            }
        }
    }
    drop(_raw);
    // The run ended: its exit code, once the supervisor has recorded it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = state::load(paths, &st.id)?;
        if now.status != Status::Running || !now.supervisor_alive() {
            return Ok(now.exit_code.unwrap_or(0));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
