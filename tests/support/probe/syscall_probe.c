/* Tries syscalls that Docker's default seccomp profile blocks and some it
 * allows, each in a forked child so that one's effects (a new user namespace, a
 * personality, a mount) never touch the next. Prints one line per syscall:
 *
 *     NAME allowed | NAME EPERM | NAME ENOSYS | NAME errno=N | NAME killed=SIG
 *
 * Built static (cc -static) so the same binary runs in any rootfs. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/netlink.h>

#define KEYCTL_GET_KEYRING_ID 0
#define KEY_SPEC_PROCESS_KEYRING -2

static long probe_keyctl(void) {
    return syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 1);
}
static long probe_add_key(void) {
    return syscall(SYS_add_key, "user", "agent-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING);
}
static long probe_unshare_user(void) { return unshare(CLONE_NEWUSER); }
static long probe_unshare_mount(void) { return unshare(CLONE_NEWNS); }
static long probe_kexec_load(void) { return syscall(SYS_kexec_load, 0, 0, NULL, 0); }
static long probe_bpf(void) { return syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, NULL, 0); }
static long probe_mount(void) { return mount("none", "/tmp", "tmpfs", 0, NULL); }
static long probe_swapon(void) { return syscall(SYS_swapon, "/nonexistent", 0); }
static long probe_personality_bsd(void) { return syscall(SYS_personality, 0x0006 /* PER_BSD */); }
static long probe_personality_linux(void) { return syscall(SYS_personality, PER_LINUX); }
static long probe_userfaultfd(void) { return syscall(SYS_userfaultfd, 0); }
static long probe_perf_event_open(void) { return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0); }
static long probe_clock_settime(void) {
    struct timespec ts = {0, 0};
    return syscall(SYS_clock_settime, CLOCK_REALTIME, &ts);
}
static long probe_init_module(void) { return syscall(SYS_init_module, NULL, 0, ""); }
static long probe_acct(void) { return syscall(SYS_acct, NULL); }
static long probe_iopl(void) { return syscall(SYS_iopl, 3); }
static long probe_open_by_handle_at(void) { return syscall(SYS_open_by_handle_at, -1, NULL, 0); }
static long probe_setns(void) { return syscall(SYS_setns, -1, 0); }
static long probe_getpid(void) { return getpid(); }
static long probe_uname(void) {
    struct utsname u;
    return uname(&u);
}
static long probe_clone(void) {
    /* clone without new namespaces: a plain fork. */
    long pid = syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid < 0 ? -1 : 0;
}
static long probe_socket_unix(void) { return socket(AF_UNIX, SOCK_STREAM, 0); }
static long probe_socket_audit(void) { return socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT); }

struct probe {
    const char *name;
    long (*fn)(void);
};

static const struct probe probes[] = {
    {"keyctl", probe_keyctl},
    {"add_key", probe_add_key},
    {"unshare(CLONE_NEWUSER)", probe_unshare_user},
    {"unshare(CLONE_NEWNS)", probe_unshare_mount},
    {"kexec_load", probe_kexec_load},
    {"bpf", probe_bpf},
    {"mount", probe_mount},
    {"swapon", probe_swapon},
    {"personality(PER_BSD)", probe_personality_bsd},
    {"userfaultfd", probe_userfaultfd},
    {"perf_event_open", probe_perf_event_open},
    {"clock_settime", probe_clock_settime},
    {"init_module", probe_init_module},
    {"acct", probe_acct},
    {"iopl", probe_iopl},
    {"open_by_handle_at", probe_open_by_handle_at},
    {"setns", probe_setns},
    {"getpid", probe_getpid},
    {"uname", probe_uname},
    {"personality(PER_LINUX)", probe_personality_linux},
    {"clone", probe_clone},
    {"socket(AF_UNIX)", probe_socket_unix},
    {"socket(NETLINK_AUDIT)", probe_socket_audit},
};

int main(void) {
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            errno = 0;
            long r = probes[i].fn();
            _exit(r < 0 ? (errno & 0xff) : 0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status)) {
            printf("%s killed=%d\n", probes[i].name, WTERMSIG(status));
        } else {
            int e = WEXITSTATUS(status);
            if (e == 0) printf("%s allowed\n", probes[i].name);
            else if (e == EPERM) printf("%s EPERM\n", probes[i].name);
            else if (e == ENOSYS) printf("%s ENOSYS\n", probes[i].name);
            else printf("%s errno=%d\n", probes[i].name, e);
        }
        fflush(stdout);
    }
    return 0;
}
