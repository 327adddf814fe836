/* The sandbox's two processes and their steps, in order, each naming its stage (sandbox.h).
 *
 * Pid 1 (on v1 in its cgroup already: the waiter's move_self): pdeathsig → root + pivot_root (rootfs.c, /proc
 * masked) → wait until in the cgroup and traced → unshare(cgroup)
 * → loopback up → hostname → audit login uid → fork the handler → close all but what its init needs → become
 * the init (init.c), which drops its privileges first of all. A pooled sandbox is built at niceness
 * 19 (a build ahead never takes the CPU from a running request) and back at 0 before the handler is forked.
 *
 * Pid 2 (the handler-to-be): pdeathsig → signals to default, mask empty → what to launch (the gate of a pooled
 * sandbox, else the plan's) and the seccomp filter in memory files → stdio on 0-2, those on 3-6, nothing else
 * → rlimits (on the final descriptors) → bounding set → groups, gid, uid → capabilities → no_new_privs → umask
 * → chdir → launch (launch.c): [a pooled sandbox: wait at the gate for the argv and environment of the execution
 * that takes it] → find the handler → seccomp (last: nothing of ours runs under the filter) → execve.
 *
 * The error pipe reaches EOF only once both have closed it — the init after its own privileges are gone, the
 * handler by execve — so "started" means the whole sandbox stands.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "init.h"
#include "launch.h"
#include "privileges.h"
#include "process.h"
#include "rootfs.h"
#include "steps.h"

/* Files the handler creates are group-writable: in a writable bind owned by the sandboxes' shared group
 * (setgid), the next execution — another uid — may change them. */
#define HANDLER_UMASK 0007
#define BUILD_AHEAD_NICE 19

static void loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    check(s);
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strcpy(request.ifr_name, "lo");
    check(ioctl(s, SIOCGIFFLAGS, &request));
    request.ifr_flags |= IFF_UP;
    check(ioctl(s, SIOCSIFFLAGS, &request));
    close(s);
}

/* The audit login uid of the sandbox: set while privileged, so an unprivileged handler cannot set it itself
 * (the kernel lets a process with an unset loginuid set it once, to anything, 0 included). Absent only on
 * kernels without audit, where there is nothing to set. */
static void set_loginuid(uid_t uid) {
    int fd = open("/proc/self/loginuid", O_WRONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return;
    check(fd);
    char text[16];
    int length = snprintf(text, sizeof text, "%u", (unsigned)uid);
    check(write(fd, text, (size_t)length));
    close(fd);
}

/* Every disposition to its default and an empty mask, as on a normal host: ignored signals survive execve. By
 * the system call: the C library refuses its own two (32, 33), which posix_spawn leaves ignored. */
static void reset_signals(void) {
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        unsigned long mask;
    } action = {SIG_DFL, 0, NULL, 0};
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            check(syscall(SYS_rt_sigaction, sig, &action, NULL, sizeof action.mask));
    sigset_t empty;
    sigemptyset(&empty);
    check(sigprocmask(SIG_SETMASK, &empty, NULL));
}

/* A memory file holding `blob`, read from its start by the launch (launch.c). */
static int memfd(const char *name, struct blob blob) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    check(fd);
    check(write_all(fd, blob.data, blob.length)); /* no RLIMIT_FSIZE yet */
    check(lseek(fd, 0, SEEK_SET));
    return fd;
}

/* The execution's pipes on 0, 1, 2, the error pipe on 3, what to launch on 4, the filter on 5 (launch.h);
 * everything else closed. Before the rlimits: whatever RLIMIT_NOFILE becomes, it never stands in the way. */
static void install_stdio(const int stdio[3], int errpipe, int launch, int seccomp_filter) {
    const int kept[] = {stdio[0], stdio[1], stdio[2], errpipe, launch, seccomp_filter};
    enum { KEPT = sizeof kept / sizeof kept[0] };
    int lifted[KEPT];
    for (int i = 0; i < KEPT; i++) { /* a source on 0-5 could be overwritten by an earlier move: lift it first */
        lifted[i] = kept[i] >= KEPT ? kept[i] : fcntl(kept[i], F_DUPFD_CLOEXEC, KEPT);
        check(lifted[i]);
    }
    for (int target = 0; target < KEPT; target++)
        check(dup2(lifted[target], target));
    close_range(KEPT, ~0u, 0);
    step_errpipe = ERRPIPE_FD;
}

static void drop_privileges(const struct plan *plan) {
    step("rlimits");
    for (size_t i = 0; i < plan->rlimit_count; i++)
        check(setrlimit((__rlimit_resource_t)plan->rlimits[i].resource, &plan->rlimits[i].value));
    step("bounding set");
    check(drop_bounding_set());
    step("ids");
    check(setgroups(plan->group_count, plan->groups));
    check(setresgid(plan->gid, plan->gid, plan->gid));
    check(setresuid(plan->uid, plan->uid, plan->uid));
    step("capabilities");
    check(clear_capabilities());
    step("no_new_privs");
    check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    umask(HANDLER_UMASK);
    step("chdir");
    check(chdir(plan->workdir));
}

/* Pid 2: drop everything, then launch the handler (launch.c). `gate`: a pooled sandbox's, where the launch
 * waits for what to run; -1: the plan's argv and environment are launched. */
__attribute__((noreturn)) static void run_handler(const struct plan *plan, const int stdio[3], int errpipe,
                                                  int gate) {
    step_errpipe = errpipe;
    step("pdeathsig");
    check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    step("signals");
    reset_signals();
    step("launch"); /* before the rlimits: RLIMIT_FSIZE and RLIMIT_NOFILE must not stand in its way */
    int launch = gate >= 0 ? gate : memfd("launch", plan->launch);
    int seccomp_filter = memfd("seccomp", plan->seccomp_filter);
    step("stdio");
    install_stdio(stdio, errpipe, launch, seccomp_filter);
    drop_privileges(plan);
    run_launch(gate >= 0 ? (enum launch_mode)plan->gated : LAUNCH_NOW);
}

/* "forked" to the watch, with the handler's pid as credentials (SCM_CREDENTIALS, which needs the privilege pid 1
 * still has to name a process other than itself): the kernel gives the watch its host pid, which no process
 * inside the sandbox's pid namespace could name. */
static void say_forked(int report_fd, pid_t handler) {
    struct ucred credentials = {handler, getuid(), getgid()};
    union {
        struct cmsghdr align;
        char buffer[CMSG_SPACE(sizeof credentials)];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {"forked\n", 7};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buffer,
                             .msg_controllen = sizeof control.buffer};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_CREDENTIALS;
    header->cmsg_len = CMSG_LEN(sizeof credentials);
    memcpy(CMSG_DATA(header), &credentials, sizeof credentials);
    check(sendmsg(report_fd, &message, MSG_NOSIGNAL) == 7 ? 0 : -1);
}

static void wait_joined(int joined, const char *what) {
    step("join cgroup");
    char ack = 0;
    if (read(joined, &ack, 1) != 1 || ack != '1') /* the waiter reports why on the error pipe */
        step_refused(EIO, "the %s could not be put in its cgroup", what);
    close(joined);
}

void run_sandbox(const struct plan *plan, const int stdio[3], int errpipe, int joined, int report_fd, int gate) {
    step_errpipe = errpipe;
    step("pdeathsig");
    check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    if (plan->gated) /* built ahead: at the lowest priority, so it never takes the CPU from a running request */
        check(setpriority(PRIO_PROCESS, 0, BUILD_AHEAD_NICE));
    build_and_pivot(plan);
    wait_joined(joined, "sandbox");
    step("cgroup ns");
    check(unshare(CLONE_NEWCGROUP)); /* after joining, so the leaf is the namespace's root */
    step("loopback");
    loopback_up();
    step("hostname");
    check(sethostname(plan->hostname, strlen(plan->hostname)));
    step("loginuid");
    set_loginuid(plan->uid);
    if (plan->gated) /* the init and the handler run at the priority of any execution */
        check(setpriority(PRIO_PROCESS, 0, 0));
    step("fork handler");
    pid_t handler = fork();
    check(handler);
    if (handler == 0) {
        close(report_fd);
        run_handler(plan, stdio, errpipe, gate);
    }
    /* From here a failure ends pid 1, and with it the whole pid namespace: the handler too. */
    for (int i = 0; i < 3; i++)
        close(stdio[i]);
    say_forked(report_fd, handler);
    step("init privileges");
    const int kept[] = {errpipe, report_fd};
    close_all_except(kept, 2);
    run_init(errpipe, report_fd, handler, plan->uid, plan->gid, plan->group_count, plan->groups);
}

void run_call(const struct plan *plan, const int stdio[3], int errpipe, int joined) {
    step_errpipe = errpipe;
    step("pdeathsig");
    check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    wait_joined(joined, "call");
    step("loginuid");
    set_loginuid(plan->uid);
    run_handler(plan, stdio, errpipe, -1);
}
