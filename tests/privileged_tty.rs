//! Privileged tests of terminals: `agent launch -it`, `agent exec -it` and
//! `agent attach` driven through a real pseudo-terminal that this test opens,
//! as a person at a terminal would: the window size set here is what `stty size`
//! says inside, a resize reaches the container, and Ctrl-C stops a foreground
//! `sleep` without ending the shell. Also `agent logs -f --timestamps`.

use agent_test_support::launch as support;
use agent_test_support::launch::KillOnDrop;
use agent_test_support::require_privileges;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Env;

/// The test's side of a terminal: the pty master, everything the program wrote.
struct Terminal {
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
    child: KillOnDrop,
}

fn set_size(fd: i32, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `ws` is a valid winsize for TIOCSWINSZ.
    assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }, 0);
}

impl Terminal {
    /// Runs `agent ARGS` as the session leader of a new terminal of this size.
    fn spawn(env: &Env, args: &[&str], rows: u16, cols: u16) -> Terminal {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: valid out-pointers; the rest may be null.
        let ret = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(ret, 0, "openpty");
        // SAFETY: fresh descriptors from openpty, owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        set_size(master.as_raw_fd(), rows, cols);
        let mut cmd = env.command(args);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the slave.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = KillOnDrop(cmd.spawn().expect("spawn agent on a pty"));
        drop(slave);
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            seen,
            child,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the output holds `needle` (after what was seen before `from`).
    fn expect(&self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
                return from + i + needle.len();
            }
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?} in the terminal: {:?}",
                &text[from.min(text.len())..]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, bytes: &str) {
        self.master.write_all(bytes.as_bytes()).unwrap();
    }

    fn exit_code(&mut self) -> i32 {
        let status = self
            .child
            .wait_timeout(Duration::from_secs(15))
            .expect("agent exits after the shell");
        status.code().expect("exit code")
    }
}

/// Size, resize, Ctrl-C and exit through an interactive shell on `term`.
fn drive_shell(term: &mut Terminal) {
    let mut at = term.expect(0, "# ");
    term.send("stty size\n");
    at = term.expect(at, "33 111");
    // A resize of the caller's terminal reaches the container's (SIGWINCH).
    set_size(term.master.as_raw_fd(), 44, 120);
    std::thread::sleep(Duration::from_millis(300));
    term.send("stty size\n");
    at = term.expect(at, "44 120");
    // Ctrl-C stops the foreground sleep; the shell lives on.
    term.send("sleep 100\n");
    std::thread::sleep(Duration::from_millis(500));
    let before = Instant::now();
    term.send("\x03");
    term.send("echo after=$?\n");
    at = term.expect(at, "after=130");
    assert!(before.elapsed() < Duration::from_secs(10));
    term.send("exit 3\n");
    let _ = at;
    assert_eq!(term.exit_code(), 3, "{}", term.text());
}

#[test]
fn launch_it_has_the_terminal_size_and_ctrl_c_stops_a_foreground_sleep() {
    require_privileges!();
    let env = Env::new();
    let mut term = Terminal::spawn(
        &env,
        &["launch", "-it", "--name", "shell", "busybox", "sh"],
        33,
        111,
    );
    drive_shell(&mut term);
    let v = env.inspect("shell");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["config"]["process"]["terminal"], true);
}

#[test]
fn exec_it_has_the_terminal_size_and_ctrl_c_stops_a_foreground_sleep() {
    require_privileges!();
    let env = Env::new();
    env.launch(&["-d", "--name", "box", "busybox", "sleep", "600"])
        .ok();
    let mut term = Terminal::spawn(&env, &["exec", "-it", "box", "sh"], 33, 111);
    drive_shell(&mut term);
    // The container is untouched by the exec's Ctrl-C and exit.
    assert_eq!(env.inspect("box")["status"], "running");
}

#[test]
fn attach_to_a_detached_terminal_and_logs_with_timestamps() {
    require_privileges!();
    let env = Env::new();
    env.launch(&["-dit", "--name", "bg", "busybox", "sh"]).ok();
    let mut term = Terminal::spawn(&env, &["attach", "bg"], 33, 111);
    std::thread::sleep(Duration::from_millis(300));
    term.send("stty size; echo marker-$((6*7))\n");
    let at = term.expect(0, "marker-42");
    term.expect(at.saturating_sub(30), "33 111");
    term.send("exit 4\n");
    assert_eq!(term.exit_code(), 4, "{}", term.text());
    let v = env.wait_exited("bg", 10);
    assert_eq!(v["exit_code"], 4);
    // What the terminal showed is in the log, each line with its time.
    let logs = env.agent(&["logs", "--timestamps", "bg"]).ok().stdout;
    let line = logs
        .lines()
        .find(|l| l.contains("marker-42") && !l.contains("echo"))
        .unwrap_or_else(|| panic!("{logs}"));
    let (ts, rest) = line.split_once(' ').unwrap();
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{line}"
    );
    assert!(rest.starts_with("marker-42"), "{line}");
    let plain = env.agent(&["logs", "bg"]).ok().stdout;
    assert!(plain.lines().any(|l| l.starts_with("marker-42")), "{plain}");
}

#[test]
fn logs_follow_until_exit_and_stdin_without_i_is_empty() {
    require_privileges!();
    let env = Env::new();
    env.launch(&[
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "cat; echo first; sleep 1; echo second >&2; sleep 1; echo third",
    ])
    .ok();
    let started = Instant::now();
    let run = env.agent(&["logs", "-f", "-t", "talker"]).ok();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "-f waits for the end"
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:#?}");
    let stamps: Vec<&str> = lines.iter().map(|l| l.split_once(' ').unwrap().0).collect();
    for (l, want) in lines.iter().zip(["first", "second", "third"]) {
        assert!(l.ends_with(want), "{l}");
    }
    assert!(stamps[0] < stamps[1] && stamps[1] < stamps[2], "{stamps:?}");
    // Attached, without -i, stdin is /dev/null (cat ends at once); with -i it is
    // the caller's.
    for (flags, want) in [(&[][..], "done\n"), (&["-i"][..], "typed\ndone\n")] {
        let mut args = vec!["launch", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "sh", "-c", "cat; echo done"]);
        let mut child = env.command(&args).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{flags:?}");
    }
}
