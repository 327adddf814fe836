/* The waiter's watch over a sandbox (watch.h), from the moment its first process is in its cgroup until that
 * process has ended — the waiter (waiter.c) turns to it once it has seized that process (PTRACE_SEIZE with
 * fork, vfork, clone and exit events) and put it in its cgroup; it is the tracer and the parent.
 *
 * The first process is the sandbox's pid 1 (with the init's report: its "forked" and "status W" lines) or a
 * call in a session: its handler itself. The host's /proc (O_PATH) was opened before the sandbox's pivot_root
 * changed what "/proc" means here. Untraced (ptrace refused): only the outcome is reported.
 *
 * Only the tool's processes stay traced: the init is let go (PTRACE_DETACH) at its one fork, the handler's,
 * and every process at its exit stop once its way out is read — so the handler's own exit stop is the only
 * one between its end and the report (the init's SIGCHLD and exit were two more round trips to this process).
 *
 * Every stop is resumed as it would have gone untraced (a group-stop stays stopped until SIGCONT). Each exit
 * by SIGSYS is kept — the process, the ABI (PTRACE_GET_SYSCALL_INFO: i386 and x32 too) and the syscall — and
 * the kills reported are those the kernel marked SECCOMP_MODE_DEAD (Seccomp: 3 in the thread's status), or
 * on kernels without that mark those whose syscall_rollback left rax == orig_rax.
 *
 * Report on the status pipe: "pid P" (the handler's host pid) once it exists; "seccomp TGID ARCH NR" per killed
 * process, the handler's first, at most KILLS_REPORTED, and "seccomp-more N" for the rest; "cgroup-read I HEX"
 * per accounting file of a sandbox alone in its cgroup (read_final_cgroup below); then "exit W U S R T" — the
 * handler's wait status (its init's word, else the first process's own), the user and system CPU microseconds
 * and peak memory bytes of the whole sandbox, T 1 when it was traced; last, for a sandbox alone in its cgroup,
 * "removed N" once its removal is over (N 1: all of it gone).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include "watch.h"

#define KILLS_REPORTED 32 /* program.KILLS_REPORTED */
#define SIGSYS_KEPT 1024  /* a tool that forks doomed processes in a loop must not grow the watch without bound */
#define SECCOMP_MODE_DEAD 3
#define CGROUP_READ_MAX_BYTES 1024 /* an accounting file (cpu.stat is the longest, ~300 bytes) */

struct sigsys_exit {
    pid_t tid, tgid;
    unsigned arch;
    long nr;
    int dead, rolled_back;
};

static int status_fd, proc_fd;
static pid_t first_pid, handler_pid;
static struct sigsys_exit *exits;
static size_t exit_count, exit_capacity;
static pid_t *dropped; /* processes killed by SIGSYS past SIGSYS_KEPT */
static size_t dropped_count, dropped_capacity;

static void *grow(void *array, size_t *capacity, size_t item_bytes) {
    *capacity = *capacity ? *capacity * 2 : 64;
    void *grown = realloc(array, *capacity * item_bytes);
    if (grown == NULL)
        _exit(1); /* no "exit" line: the spawner reports the watch's end as unknown */
    return grown;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    char line[128];
    va_list args;
    va_start(args, fmt);
    int length = vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    if (length > 0 && write(status_fd, line, (size_t)length) < 0) {
        /* the spawner is gone: its own end follows */
    }
}

static void announce(pid_t pid) {
    handler_pid = pid;
    say("pid %d\n", pid);
}

/* A file of the host's /proc, NUL-terminated into `buffer`; its length, -1 on error. */
static ssize_t read_proc(const char *path, char *buffer, size_t size) {
    int fd = openat(proc_fd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t length = read(fd, buffer, size - 1);
    close(fd);
    if (length >= 0)
        buffer[length] = '\0';
    return length;
}

static long status_field(const char *status, const char *key, long fallback) {
    const char *at = strstr(status, key);
    return at == NULL ? fallback : strtol(at + strlen(key), NULL, 10);
}

static void record_sigsys(pid_t tid) {
    char path[64], status[4096];
    pid_t tgid = tid;
    int dead = 0;
    snprintf(path, sizeof path, "%d/status", tid);
    if (read_proc(path, status, sizeof status) > 0) {
        tgid = (pid_t)status_field(status, "\nTgid:", tid);
        dead = status_field(status, "\nSeccomp:", 0) == SECCOMP_MODE_DEAD;
    }
    if (exit_count >= SIGSYS_KEPT && tgid != handler_pid) {
        if (dropped_count == dropped_capacity)
            dropped = grow(dropped, &dropped_capacity, sizeof *dropped);
        dropped[dropped_count++] = tgid;
        return;
    }
    struct user_regs_struct regs;
    struct __ptrace_syscall_info info;
    if (ptrace(PTRACE_GETREGS, tid, NULL, &regs) != 0 ||
        ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) <= 0)
        return; /* it vanished (SIGKILL) meanwhile */
    if (exit_count == exit_capacity)
        exits = grow(exits, &exit_capacity, sizeof *exits);
    long nr = (long)regs.orig_rax, rax = (long)regs.rax;
    exits[exit_count++] = (struct sigsys_exit){tid, tgid, info.arch, nr, dead, nr == rax};
}

static int is_group_stop_signal(int sig) {
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

static void on_stop(pid_t pid, int status) {
    int event = status >> 16, sig = WSTOPSIG(status);
    unsigned long message = 0;
    if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK || event == PTRACE_EVENT_CLONE) {
        if (ptrace(PTRACE_GETEVENTMSG, pid, NULL, &message) == 0 && pid == first_pid && handler_pid == 0) {
            announce((pid_t)message); /* the init forks once: the handler, traced from its birth */
            /* The init itself runs nothing of the tool's and never forks again: untraced from here, its
             * SIGCHLD and its exit are no stops on the way to the verdict (the handler's exit is its own). */
            ptrace(PTRACE_DETACH, pid, NULL, NULL);
            return;
        }
        ptrace(PTRACE_CONT, pid, NULL, NULL);
    } else if (event == PTRACE_EVENT_EXIT) {
        if (ptrace(PTRACE_GETEVENTMSG, pid, NULL, &message) == 0 && WIFSIGNALED((int)message) &&
            WTERMSIG((int)message) == SIGSYS)
            record_sigsys(pid);
        /* Nothing more to learn from it: it ends untraced, so its parent hears of it without a stop here. */
        ptrace(PTRACE_DETACH, pid, NULL, NULL);
    } else if (event == PTRACE_EVENT_STOP) {
        if (is_group_stop_signal(sig))
            ptrace(PTRACE_LISTEN, pid, NULL, NULL); /* stays stopped until SIGCONT, as untraced */
        else
            ptrace(PTRACE_CONT, pid, NULL, NULL); /* a new child's first stop */
    } else {
        ptrace(PTRACE_CONT, pid, NULL, (void *)(long)sig); /* a signal on its way: delivered as it would be */
    }
}

/* Until the first process has ended: its wait status and the resources of everything below it. */
static void watch_traced(int *status, struct rusage *usage) {
    for (;;) {
        int stopped;
        struct rusage own;
        pid_t pid = wait4(-1, &stopped, __WALL, &own);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            _exit(1);
        }
        if (!WIFSTOPPED(stopped)) {
            if (pid == first_pid) {
                *status = stopped;
                *usage = own;
                return;
            }
            continue; /* a traced process of the sandbox ended; its parent inside reaps it */
        }
        on_stop(pid, stopped);
    }
}

static void wait_first(int *status, struct rusage *usage) {
    while (wait4(first_pid, status, 0, usage) < 0)
        if (errno != EINTR)
            _exit(1);
}

static void report_kills(void) {
    int any_marked = 0;
    for (size_t i = 0; i < exit_count; i++)
        any_marked |= exits[i].dead;
    /* The first kill of each process, the handler's first, then in the order they happened. */
    struct sigsys_exit *kills = calloc(exit_count + 1, sizeof *kills);
    size_t kill_count = 0;
    if (kills == NULL)
        _exit(1);
    for (int handler_pass = 1; handler_pass >= 0; handler_pass--) {
        for (size_t i = 0; i < exit_count; i++) {
            struct sigsys_exit *e = &exits[i];
            if (!(any_marked ? e->dead : e->rolled_back) || (e->tgid == handler_pid) != handler_pass)
                continue;
            int seen = 0;
            for (size_t k = 0; k < kill_count && !seen; k++)
                seen = kills[k].tgid == e->tgid;
            if (!seen)
                kills[kill_count++] = *e;
        }
    }
    for (size_t k = 0; k < kill_count && k < KILLS_REPORTED; k++)
        say("seccomp %d %u %ld\n", kills[k].tgid, kills[k].arch, kills[k].nr);
    size_t more = kill_count > KILLS_REPORTED ? kill_count - KILLS_REPORTED : 0;
    for (size_t d = 0; d < dropped_count; d++) { /* distinct, and not among the processes named above */
        int counted = 0;
        for (size_t e = 0; e < d && !counted; e++)
            counted = dropped[e] == dropped[d];
        for (size_t k = 0; k < kill_count && !counted; k++)
            counted = kills[k].tgid == dropped[d];
        more += !counted;
    }
    if (more)
        say("seccomp-more %zu\n", more);
}

/* The init's report (a stream socket): "forked" once the handler exists, "status W" once it has ended. */
static char init_report[256];
static size_t init_report_length;

static void read_init_rest(int fd) {
    for (;;) {
        ssize_t got = read(fd, init_report + init_report_length, sizeof init_report - 1 - init_report_length);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        init_report_length += (size_t)got;
    }
    init_report[init_report_length] = '\0';
}

/* Not traced: the handler's pid from the credentials the init's "forked" line carries (SCM_CREDENTIALS: the
 * kernel numbers the pid as this process's namespace does, even once the handler has ended — a handler that
 * ends at once is still named). */
static void announce_untraced(int init_fd) {
    char line[7];
    union {
        struct cmsghdr align;
        char buffer[CMSG_SPACE(sizeof(struct ucred))];
    } control;
    struct iovec iov = {line, sizeof line};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buffer,
                             .msg_controllen = sizeof control.buffer};
    ssize_t got;
    do
        got = recvmsg(init_fd, &message, MSG_WAITALL);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof line || memcmp(line, "forked\n", sizeof line) != 0)
        return;
    memcpy(init_report, line, sizeof line); /* the rest of the report follows it */
    init_report_length = sizeof line;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (header != NULL && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_CREDENTIALS) {
        struct ucred credentials;
        memcpy(&credentials, CMSG_DATA(header), sizeof credentials);
        if (credentials.pid > 0)
            announce(credentials.pid);
    }
}

/* Once everything of the sandbox has ended: each accounting file's content, "cgroup-read I HEX" ("-" when it
 * cannot be read). Read here, and the cgroup removed here after the exit report (remove_final_cgroup) while the
 * daemon writes the outcome down: its removal before the Result costs the daemon neither a thread's hop nor a
 * wait on the kernel's cgroup lock. */
static void read_final_cgroup(const struct final_cgroup *cgroup) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < cgroup->read_count; i++) {
        char content[CGROUP_READ_MAX_BYTES], line[64 + 2 * CGROUP_READ_MAX_BYTES];
        int fd = openat(cgroup->leaf_fds[cgroup->read_leaf[i]], cgroup->read_names[i],
                        O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        ssize_t length = fd < 0 ? -1 : read(fd, content, sizeof content);
        if (fd >= 0)
            close(fd);
        int at = snprintf(line, sizeof line, "cgroup-read %zu ", i);
        if (length < 0 || (size_t)length == sizeof content) /* unread, or longer than any we read */
            line[at++] = '-';
        for (ssize_t k = 0; length > 0 && (size_t)length < sizeof content && k < length; k++) {
            line[at++] = digits[(unsigned char)content[k] >> 4];
            line[at++] = digits[(unsigned char)content[k] & 15];
        }
        line[at++] = '\n';
        if (write(status_fd, line, (size_t)at) < 0) {
            /* the spawner is gone: its own end follows */
        }
    }
}

/* Whether all of the cgroup is gone; else the daemon removes what is left (a session's calls below it). */
static int remove_final_cgroup(const struct final_cgroup *cgroup) {
    int removed = 1;
    for (size_t i = 0; removed && i < cgroup->leaf_count; i++)
        removed = unlinkat(cgroup->parent_fds[i], cgroup->leaf_names[i], AT_REMOVEDIR) == 0;
    return removed;
}

void run_watch(int status_pipe, int proc, pid_t first, int traced, int init_fd, const struct final_cgroup *cgroup) {
    prctl(PR_SET_NAME, (unsigned long)"sandbox-watch", 0, 0, 0);
    status_fd = status_pipe;
    proc_fd = proc;
    first_pid = first;
    if (init_fd < 0)
        announce(first_pid); /* a call: the handler is the first process itself */
    int status = 0;
    struct rusage usage;
    memset(&usage, 0, sizeof usage);
    if (traced)
        watch_traced(&status, &usage);
    else if (init_fd >= 0)
        announce_untraced(init_fd);
    if (!traced)
        wait_first(&status, &usage);
    if (traced)
        report_kills();
    if (init_fd >= 0) { /* the handler's own wait status, as its init saw it */
        read_init_rest(init_fd);
        const char *line = strstr(init_report, "status ");
        if (line != NULL && (line == init_report || line[-1] == '\n'))
            status = atoi(line + 7);
    }
    read_final_cgroup(cgroup);
    say("exit %d %lld %lld %lld %d\n", status,
        (long long)usage.ru_utime.tv_sec * 1000000 + usage.ru_utime.tv_usec,
        (long long)usage.ru_stime.tv_sec * 1000000 + usage.ru_stime.tv_usec, (long long)usage.ru_maxrss * 1024,
        traced);
    if (cgroup->leaf_count > 0) /* while the daemon writes the outcome down */
        say("removed %d\n", remove_final_cgroup(cgroup));
    _exit(0);
}
