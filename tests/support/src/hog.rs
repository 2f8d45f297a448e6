//! A memory/CPU hog process, forked from the test and killed on drop.

use std::time::Duration;

/// A forked process that, once released, touches `memory` bytes of anonymous memory,
/// burns `cpu` of CPU time, reports its pid's readiness and then sleeps until killed
/// ([`Hog::fork`]); or touches its memory, reports, and burns CPU until killed
/// ([`Hog::fork_spinning`]).
///
/// The child only makes raw system calls (no allocation), so forking from the
/// multi-threaded test harness is sound.
pub struct Hog {
    pub pid: i32,
    go: i32,
    done: i32,
    /// Set once the child has been waited for, so drop never signals a reused pid.
    reaped: std::cell::Cell<bool>,
}

impl Hog {
    /// Forks the hog; it waits for [`Hog::release`] before doing anything.
    pub fn fork(memory: usize, cpu: Duration) -> Hog {
        Self::fork_inner(memory, Some(cpu.as_nanos().min(i64::MAX as u128) as i64))
    }

    /// Forks a hog that, once released, touches `memory` bytes, reports (so
    /// [`Hog::release_and_wait`] returns) and then burns CPU until it is killed.
    pub fn fork_spinning(memory: usize) -> Hog {
        Self::fork_inner(memory, None)
    }

    /// `cpu_ns`: CPU time to burn before reporting and sleeping; `None`: report, then
    /// burn forever.
    fn fork_inner(memory: usize, cpu_ns: Option<i64>) -> Hog {
        let mut go = [0i32; 2];
        let mut done = [0i32; 2];
        // SAFETY: pipe writes two fds into the arrays we own.
        unsafe {
            assert_eq!(libc::pipe(go.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(done.as_mut_ptr()), 0);
        }
        // SAFETY: the child only calls async-signal-safe functions and raw syscalls
        // (read, mmap, clock_gettime, write, pause, _exit): no locks, no allocation.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: in the forked child: raw syscalls on its own pipes and memory
            // only, then _exit (see the fork above).
            unsafe {
                let mut b = 0u8;
                libc::read(go[0], (&mut b as *mut u8).cast(), 1);
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    memory,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    libc::_exit(2);
                }
                let bytes = p.cast::<u8>();
                let mut i = 0;
                while i < memory {
                    std::ptr::write_volatile(bytes.add(i), 1);
                    i += 4096;
                }
                let Some(cpu_ns) = cpu_ns else {
                    libc::write(done[1], (&b as *const u8).cast(), 1);
                    let mut spin = 0u64;
                    loop {
                        spin = std::ptr::read_volatile(&spin).wrapping_add(1);
                        std::ptr::write_volatile(&mut spin, spin);
                    }
                };
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                loop {
                    libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
                    if ts.tv_sec * 1_000_000_000 + ts.tv_nsec >= cpu_ns {
                        break;
                    }
                }
                libc::write(done[1], (&b as *const u8).cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        // SAFETY: closing the ends the parent does not use.
        unsafe {
            libc::close(go[0]);
            libc::close(done[1]);
        }
        Hog {
            pid,
            go: go[1],
            done: done[0],
            reaped: std::cell::Cell::new(false),
        }
    }

    /// Lets the hog start.
    pub fn release(&self) {
        let b = 1u8;
        // SAFETY: a plain write on a pipe fd this struct owns.
        let written = unsafe { libc::write(self.go, (&b as *const u8).cast(), 1) };
        assert_eq!(written, 1);
    }

    /// Waits for the hog to exit; returns the raw wait status.
    pub fn wait_exit(&self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        if r == self.pid {
            self.reaped.set(true);
        }
        status
    }

    /// Lets the hog start and waits until it has done its work.
    pub fn release_and_wait(&self) {
        self.release();
        let mut r = 0u8;
        // SAFETY: a plain read on a pipe fd this struct owns.
        unsafe {
            assert_eq!(
                libc::read(self.done, (&mut r as *mut u8).cast(), 1),
                1,
                "hog died before finishing (OOM?)"
            );
        }
    }

    /// The hog's own CPU time (user, system) in seconds, from `/proc/<pid>/stat`.
    pub fn cpu_times(&self) -> (f64, f64) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // Fields after the parenthesised comm; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (
            f[11].parse::<f64>().unwrap() / hz,
            f[12].parse::<f64>().unwrap() / hz,
        )
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        // SAFETY: signalling and reaping our own child (unless already reaped, when
        // the pid may belong to someone else by now); closing our own fds.
        unsafe {
            if !self.reaped.get() {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            libc::close(self.go);
            libc::close(self.done);
        }
    }
}
