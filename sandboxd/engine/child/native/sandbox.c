/* The sandbox's two processes and their steps, in order, each naming its stage (sandbox.h).
 *
 * Pid 1: pdeathsig → root + pivot_root (rootfs.c, /proc masked) → wait until in the cgroup → unshare(cgroup)
 * → loopback up → hostname → audit login uid → fork the handler → close all but what its init needs → run
 * sandbox-init, which drops its privileges itself and becomes the init. A pooled sandbox is built at niceness
 * 19 (a build ahead never takes the CPU from a running request) and back at 0 before the handler is forked.
 *
 * Pid 2 (the handler-to-be): pdeathsig → signals to default, mask empty → what to launch (the gate of a pooled
 * sandbox, else the plan's) and the seccomp filter in memory files → stdio on 0-2, those on 3-6, nothing else
 * → rlimits (on the final descriptors) → bounding set → groups, gid, uid → capabilities → no_new_privs → umask
 * → chdir → run sandbox-exec: [a pooled sandbox: wait at the gate for the argv and environment of the execution
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

#include "privileges.h"
#include "rootfs.h"
#include "steps.h"

/* Files the handler creates are group-writable: in a writable bind owned by the sandboxes' shared group
 * (setgid), the next execution — another uid — may change them. */
#define HANDLER_UMASK 0007
#define BUILD_AHEAD_NICE 19
/* The handler's descriptors as it runs sandbox-exec (native/exec.c). */
enum { ERRPIPE_FD = 3, LAUNCH_FD = 4, FILTER_FD = 5, EXEC_HELPER_FD = 6 };

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

/* A memory file holding `blob`, read from its start by sandbox-exec. */
static int memfd(const char *name, struct blob blob) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    check(fd);
    for (size_t at = 0; at < blob.length;) { /* no RLIMIT_FSIZE yet */
        ssize_t written = write(fd, blob.data + at, blob.length - at);
        check(written);
        at += (size_t)written;
    }
    check(lseek(fd, 0, SEEK_SET));
    return fd;
}

/* The execution's pipes on 0, 1, 2 and the rest on 3-6; everything else closed. Before the rlimits: whatever
 * RLIMIT_NOFILE becomes, it never stands in the way. */
static void install_stdio(const int stdio[3], int errpipe, int launch, int seccomp_filter, int exec_helper) {
    const int kept[] = {stdio[0], stdio[1], stdio[2], errpipe, launch, seccomp_filter, exec_helper};
    int lifted[7];
    for (int i = 0; i < 7; i++) { /* a source on 0-6 could be overwritten by an earlier move: lift it first */
        lifted[i] = kept[i] > EXEC_HELPER_FD ? kept[i] : fcntl(kept[i], F_DUPFD_CLOEXEC, EXEC_HELPER_FD + 1);
        check(lifted[i]);
    }
    for (int target = 0; target < 7; target++)
        check(dup3(lifted[target], target, target == EXEC_HELPER_FD ? O_CLOEXEC : 0));
    close_range(EXEC_HELPER_FD + 1, ~0u, 0);
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

/* Pid 2: drop everything, then become the handler through sandbox-exec. `gate`: a pooled sandbox's, where
 * sandbox-exec waits for what to launch; -1: the plan's argv and environment are launched. */
__attribute__((noreturn)) static void run_handler(const struct plan *plan, const int stdio[3], int errpipe,
                                                  const struct helpers *helpers, int gate) {
    step_errpipe = errpipe;
    step("pdeathsig");
    check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    step("signals");
    reset_signals();
    step("launch"); /* before the rlimits: RLIMIT_FSIZE and RLIMIT_NOFILE must not stand in its way */
    int launch = gate >= 0 ? gate : memfd("launch", plan->launch);
    int seccomp_filter = memfd("seccomp", plan->seccomp_filter);
    step("stdio");
    install_stdio(stdio, errpipe, launch, seccomp_filter, helpers->exec_fd);
    drop_privileges(plan);
    step(EXEC_NAME);
    char *argv[] = {EXEC_NAME, gate >= 0 ? "gated" : NULL, NULL};
    char *const no_environment[] = {NULL};
    execveat(EXEC_HELPER_FD, "", argv, no_environment, AT_EMPTY_PATH);
    step_failed(errno);
}

static void wait_joined(int joined, const char *what) {
    step("join cgroup");
    char ack = 0;
    if (read(joined, &ack, 1) != 1 || ack != '1') /* the waiter reports why on the error pipe */
        step_refused(EIO, "the %s could not be put in its cgroup", what);
    close(joined);
}

void run_sandbox(const struct plan *plan, const int stdio[3], int errpipe, int joined, int report_fd,
                 const struct helpers *helpers, int gate) {
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
        run_handler(plan, stdio, errpipe, helpers, gate);
    }
    /* From here a failure ends pid 1, and with it the whole pid namespace: the handler too. */
    for (int i = 0; i < 3; i++)
        close(stdio[i]);
    check(write(report_fd, "forked\n", 7));
    step("init privileges");
    char numbers[5 + 1][24], **argv = calloc(6 + plan->group_count + 1, sizeof *argv);
    if (argv == NULL)
        step_failed(ENOMEM);
    const long long values[] = {errpipe, report_fd, handler, plan->uid, plan->gid};
    argv[0] = INIT_NAME;
    for (int i = 0; i < 5; i++) {
        snprintf(numbers[i], sizeof numbers[i], "%lld", values[i]);
        argv[1 + i] = numbers[i];
    }
    for (size_t i = 0; i < plan->group_count; i++) {
        if ((argv[6 + i] = malloc(24)) == NULL)
            step_failed(ENOMEM);
        snprintf(argv[6 + i], 24, "%u", (unsigned)plan->groups[i]);
    }
    const int passed[] = {errpipe, report_fd};
    run_helper(helpers->init_fd, argv, passed, 2, -1);
    step_failed(errno);
}

void run_call(const struct plan *plan, const int stdio[3], int errpipe, int joined, const struct helpers *helpers) {
    step_errpipe = errpipe;
    step("pdeathsig");
    check(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    wait_joined(joined, "call");
    step("loginuid");
    set_loginuid(plan->uid);
    run_handler(plan, stdio, errpipe, helpers, -1);
}
