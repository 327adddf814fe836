/* The waiter: the spawner's child for one execution (waiter.h) — makes the namespaces, forks the sandbox's
 * first process into them, puts it in its cgroup, and watches it until it has ended. No interpreter is forked
 * per execution: the spawner (spawner.c) is this same small program, and every process of the sandbox runs its
 * code until the handler's own execve — nothing is exec'd in between.
 *
 *    spawner ──fork──▶ waiter (host pid ns, outside the execution's cgroup; traces the sandbox)
 *                        │ the cgroup made, with its limits (cgroup.c: a sandbox alone in it; else the daemon made it)
 *                        │ unshare(pid, mount, net, ipc, uts) ; mounts rprivate ; pid 1 into the cgroup
 *                        │ ; the watch (watch.c)
 *                        └─fork──▶ pid 1: builds the sandbox (sandbox.c, rootfs.c), then the init (init.c)
 *                                    └─fork──▶ pid 2: the handler (its launch: launch.c)
 *
 * The waiter stays outside the cgroup on purpose: killing the cgroup (timeouts, memory.oom.group) must not take
 * the one process that reports the outcome with it. On v2 it forks pid 1 straight into the leaf (clone3 with
 * CLONE_INTO_CGROUP), or on a kernel without it moves pid 1 by pid while pid 1 builds its root. On v1 pid 1 moves
 * itself, before anything else, by writing "0" to each hierarchy's `tasks`: a thread moving itself is the one
 * migration the kernel makes without its global threadgroup lock, whose write side waits out an RCU grace period
 * (12-17 ms measured here) while holding cgroup_mutex — which every cgroup mkdir and rmdir on the machine then
 * waits behind, another execution's end included. Pid 1 is single-threaded: its thread is the whole process.
 * Pid 1 waits for the waiter's ack (it is traced) before it creates its cgroup namespace and before anything of
 * the tool runs: nothing the tool does escapes accounting.
 *
 * The waiter seizes pid 1 with PTRACE_O_TRACEFORK|VFORK|CLONE before that ack, so every process and thread of
 * the sandbox is traced from its birth (the init only until it has forked the handler: watch.c), and with
 * PTRACE_O_TRACEEXIT, so each one's exit stops where its
 * registers can still be read; then it turns to the watch, still the tracer and the parent. If
 * ptrace is refused (Yama, an LSM), nothing is traced and the executor falls back to the kernel's audit record.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cgroup.h"
#include "plan.h"
#include "process.h"
#include "report.h"
#include "sandbox.h"
#include "steps.h"
#include "waiter.h"
#include "watch.h"

#define NAMESPACES (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
#define TRACE_OPTIONS                                                                                          \
    (PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXIT | PTRACE_O_EXITKILL)
#define MAX_HIERARCHIES 8 /* v1: memory, cpu, pids, freezer…; v2: one */

/* Where the first process goes: the leaf directory of each hierarchy (v2: one), opened before anything can
 * change what the paths mean — the call's chroot, pid 1's pivot_root — and its cgroup.procs, by name or, once
 * opened (open_procs), by descriptor; on v1 its `tasks`, which the first process writes itself (move_self). */
struct placement {
    size_t count;
    int leaf_fds[MAX_HIERARCHIES];
    const char *procs_names[MAX_HIERARCHIES];
    int procs_fds[MAX_HIERARCHIES]; /* -1: opened only to move */
    int tasks_fds[MAX_HIERARCHIES]; /* v1, every hierarchy: the first process moves itself; else all -1 */
};

/* Whether this process's / is the root of a mount (false in a plain chroot). */
static int root_is_mount_point(void) {
    FILE *mountinfo = fopen("/proc/self/mountinfo", "re");
    if (mountinfo == NULL)
        return 1;
    char line[8192], root[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, mountinfo) != NULL)
        found = sscanf(line, "%*s %*s %*s %*s %4095s", root) == 1 && strcmp(root, "/") == 0;
    fclose(mountinfo);
    return found;
}

/* v1: each leaf's `tasks`, opened now (a move is checked against the cgroup namespace the file was opened in);
 * all or none: v2 has none, and a plan mixing the two moves by pid. */
static void open_tasks(struct placement *placement) {
    size_t opened = 0;
    int fd;
    while (opened < placement->count &&
           (fd = openat(placement->leaf_fds[opened], "tasks", O_WRONLY | O_NOFOLLOW | O_CLOEXEC)) >= 0)
        placement->tasks_fds[opened++] = fd;
    if (opened == placement->count)
        return;
    if (errno != ENOENT)
        step_failed(errno);
    for (size_t i = 0; i < placement->count; i++) {
        if (i < opened)
            close(placement->tasks_fds[i]);
        placement->tasks_fds[i] = -1;
    }
}

/* Whether the first process moves itself (v1: open_tasks opened every hierarchy's `tasks`). */
static int moves_self(const struct placement *placement) {
    return placement->count > 0 && placement->tasks_fds[0] >= 0;
}

/* In the first process, before anything else: into the execution's cgroup, by its own `tasks` (v1). */
static void move_self(const struct placement *placement) {
    step("join cgroup");
    for (size_t i = 0; moves_self(placement) && i < placement->count; i++)
        if (write(placement->tasks_fds[i], "0", 1) != 1)
            step_failed(errno);
}

static void open_placement(const struct plan *plan, struct placement *placement) {
    step("open cgroup");
    if (plan->cgroup_procs_count > MAX_HIERARCHIES || plan->cgroup_procs_count == 0)
        step_refused(EINVAL, "%zu cgroup hierarchies", plan->cgroup_procs_count);
    placement->count = plan->cgroup_procs_count;
    for (size_t i = 0; i < placement->count; i++) {
        char leaf[PATH_MAX];
        if (snprintf(leaf, sizeof leaf, "%s", plan->cgroup_procs[i]) >= (int)sizeof leaf || !strchr(leaf, '/'))
            step_refused(EINVAL, "not a cgroup.procs path: %s", plan->cgroup_procs[i]);
        char *slash = strrchr(leaf, '/');
        *slash = '\0';
        placement->procs_names[i] = plan->cgroup_procs[i] + (slash - leaf) + 1;
        placement->leaf_fds[i] = open(leaf, O_PATH | O_DIRECTORY | O_CLOEXEC);
        check(placement->leaf_fds[i]);
        placement->procs_fds[i] = -1;
    }
    open_tasks(placement);
}

/* The cgroup's directories and accounting files, from the plan's host paths (watch.h): each read must be a
 * file of one of those directories. */
static void open_final_cgroup(const struct plan *plan, struct final_cgroup *cgroup) {
    step("open cgroup");
    memset(cgroup, 0, sizeof *cgroup);
    if (plan->cgroup_removal_count > FINAL_CGROUP_MAX || plan->cgroup_read_count > FINAL_CGROUP_MAX)
        step_refused(EINVAL, "%zu cgroup directories and %zu accounting files", plan->cgroup_removal_count,
                     plan->cgroup_read_count);
    for (size_t i = 0; i < plan->cgroup_removal_count; i++) {
        const char *path = plan->cgroup_removal[i], *slash = strrchr(path, '/');
        char parent[PATH_MAX];
        if (slash == NULL || slash == path || slash[1] == '\0' ||
            snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path) >= (int)sizeof parent)
            step_refused(EINVAL, "not a cgroup directory: %s", path);
        cgroup->parent_fds[i] = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
        check(cgroup->parent_fds[i]);
        cgroup->leaf_fds[i] = openat(cgroup->parent_fds[i], slash + 1, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        check(cgroup->leaf_fds[i]);
        cgroup->leaf_names[i] = slash + 1;
        cgroup->leaf_count = i + 1;
    }
    for (size_t r = 0; r < plan->cgroup_read_count; r++) {
        const char *path = plan->cgroup_reads[r];
        size_t leaf = directory_of(plan->cgroup_removal, cgroup->leaf_count, path);
        if (leaf == cgroup->leaf_count)
            step_refused(EINVAL, "not a file of the execution's cgroup: %s", path);
        cgroup->read_leaf[r] = leaf;
        cgroup->read_names[r] = strrchr(path, '/') + 1;
        cgroup->read_count = r + 1;
    }
}

static int open_procs_file(const struct placement *placement, size_t i) {
    return openat(placement->leaf_fds[i], placement->procs_names[i], O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
}

/* Open the cgroup.procs files now: a move is checked against the cgroup namespace the file was opened in, and
 * a call is moved from inside its session's, whose root the waiter's own cgroup is not below (the kernel
 * refuses clone3's CLONE_INTO_CGROUP there for the same reason). */
static void open_procs(struct placement *placement) {
    for (size_t i = 0; !moves_self(placement) && i < placement->count; i++) {
        placement->procs_fds[i] = open_procs_file(placement, i);
        check(placement->procs_fds[i]);
    }
}

static void close_placement(struct placement *placement) {
    for (size_t i = 0; i < placement->count; i++) {
        close(placement->leaf_fds[i]);
        if (placement->procs_fds[i] >= 0)
            close(placement->procs_fds[i]);
        if (placement->tasks_fds[i] >= 0)
            close(placement->tasks_fds[i]);
    }
    placement->count = 0;
}

/* Fork the sandbox's first process: born in its leaf when it can be (v2, Linux >= 5.7: clone3 with
 * CLONE_INTO_CGROUP; then no cgroup.procs is ever opened), else by fork(), to move itself (v1: move_self) or be
 * moved (seize_and_place). */
static pid_t fork_into(struct placement *placement) {
    if (placement->count == 1 && placement->procs_fds[0] < 0 && !moves_self(placement)) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_INTO_CGROUP;
        args.exit_signal = SIGCHLD;
        args.cgroup = (uint64_t)placement->leaf_fds[0];
        pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args); /* refused (a kernel, v1): forked below */
        if (pid >= 0) {
            close_placement(placement);
            return pid;
        }
    }
    pid_t pid = fork();
    check(pid);
    return pid;
}

/* Trace `pid` from before anything of the tool runs, put it in its cgroup (if it was neither born there nor moves
 * itself), let it go on (the ack it waits for); then close what it needed. Whether it is traced. */
static int seize_and_place(pid_t pid, struct placement *placement, int joined_w, int errpipe) {
    int traced = ptrace(PTRACE_SEIZE, pid, 0, (void *)(uintptr_t)TRACE_OPTIONS) == 0;
    char text[24];
    int length = snprintf(text, sizeof text, "%d", pid);
    int placed = 1;
    for (size_t i = 0; placed && !moves_self(placement) && i < placement->count; i++) {
        int procs = placement->procs_fds[i] >= 0 ? placement->procs_fds[i] : open_procs_file(placement, i);
        placed = procs >= 0 && write(procs, text, (size_t)length) == length;
        if (procs >= 0 && procs != placement->procs_fds[i])
            close(procs);
    }
    if (placed) { /* `pid` may have ended already (its own move failed: v1): then EPIPE, not the waiter's end */
        signal(SIGPIPE, SIG_IGN);
        placed = write(joined_w, "1", 1) == 1 || errno == EPIPE; /* its end is the watch's to report */
        signal(SIGPIPE, SIG_DFL);
    }
    if (!placed) {
        report(errpipe, "join cgroup", errno, "join cgroup: %s", strerror(errno));
        kill(pid, SIGKILL);
    }
    close(joined_w);
    close_placement(placement);
    return traced;
}

/* Turn to the watch (watch.c), still the tracer and parent of `pid`, with nothing open but the status pipe,
 * the host's /proc and the init's report (`init_r`; -1: `pid` is a call's handler): the error pipe closes here,
 * and its EOF waits only for the sandbox's own processes. */
__attribute__((noreturn)) static void watch(const struct fds *fds, pid_t pid, int traced, int proc_fd, int init_r,
                                            const struct final_cgroup *cgroup) {
    int kept[3 + 2 * FINAL_CGROUP_MAX] = {fds->status, proc_fd, init_r};
    size_t count = 3;
    for (size_t i = 0; i < cgroup->leaf_count; i++) {
        kept[count++] = cgroup->leaf_fds[i];
        kept[count++] = cgroup->parent_fds[i];
    }
    close_all_except(kept, count);
    run_watch(fds->status, proc_fd, pid, traced, init_r, cgroup);
}

/* A call in a session: enter the session (its namespaces by its pidfd, its root by its /proc/PID/root, checked
 * to be that process's through the pidfd), fork the call's handler there, put it in the call's cgroup, watch it
 * as a sandbox's init is watched. */
__attribute__((noreturn)) static void call_waiter(const struct plan *plan, struct fds *fds) {
    struct placement placement;
    open_placement(plan, &placement); /* before the chroot below: these are the host's paths */
    open_procs(&placement);
    int proc_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    check(proc_fd);
    step("join session");
    char root_path[64];
    snprintf(root_path, sizeof root_path, "/proc/%d/root", plan->join_pid);
    int root_fd = open(root_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    check(root_fd);
    check(syscall(SYS_pidfd_send_signal, fds->join, 0, NULL, 0)); /* alive: the pid was not reused */
    check(setns(fds->join, NAMESPACES | CLONE_NEWCGROUP));
    close(fds->join);
    check(fchdir(root_fd));
    check(chroot("."));
    close(root_fd);
    step("fork call");
    int joined[2];
    check(pipe2(joined, O_CLOEXEC));
    pid_t pid = fork_into(&placement);
    if (pid == 0) {
        close(fds->status);
        close(joined[1]);
        close(proc_fd);
        move_self(&placement);
        close_placement(&placement);
        run_call(plan, fds->stdio, fds->errpipe, joined[0]);
    }
    close(joined[0]);
    for (int i = 0; i < 3; i++)
        close(fds->stdio[i]);
    int traced = seize_and_place(pid, &placement, joined[1], fds->errpipe);
    const struct final_cgroup none = {0};
    watch(fds, pid, traced, proc_fd, -1, &none);
}

void run_waiter(pid_t spawner, int plan_fd, struct fds fds) {
    prctl(PR_SET_NAME, (unsigned long)"sandbox-waiter", 0, 0, 0);
    step_errpipe = fds.errpipe;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != spawner)
        _exit(1); /* the spawner died before pdeathsig was armed */
    /* all close-on-exec (the spawner received them so): the error pipe ends with the exec of each process that
     * holds it */
    const int ours[] = {plan_fd, fds.stdio[0], fds.stdio[1], fds.stdio[2], fds.errpipe, fds.status, fds.join,
                        fds.gate};
    close_all_except(ours, sizeof ours / sizeof ours[0]);
    struct plan plan;
    read_plan(plan_fd, fds.errpipe, &plan);
    create_cgroup(&plan); /* first of all: nothing of the sandbox exists without its limits */
    if (plan.join_pid)
        call_waiter(&plan, &fds);
    if (fds.join >= 0) {
        step("join network namespace");
        check(setns(fds.join, CLONE_NEWNET));
        close(fds.join);
    }
    step("unshare namespaces");
    check(unshare(fds.join >= 0 ? NAMESPACES & ~CLONE_NEWNET : NAMESPACES));
    step("make mounts private");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) { /* nothing we mount propagates to the host */
        if (errno == EINVAL && !root_is_mount_point())
            step_refused(EINVAL, "the root directory / is not a mount point here (a chroot?)");
        step_failed(errno);
    }
    struct placement placement;
    open_placement(&plan, &placement);
    struct final_cgroup cgroup;
    open_final_cgroup(&plan, &cgroup);
    /* Opened now: pid 1's pivot_root moves the root of this process too (same mount namespace), after which
     * "/proc" is the sandbox's. The host's /proc stays reachable through proc_fd. */
    int proc_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    check(proc_fd);
    step("fork pid 1");
    int joined[2], init_report[2];
    check(pipe2(joined, O_CLOEXEC));
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, init_report)); /* its "forked" carries credentials */
    const int one = 1;
    check(setsockopt(init_report[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one));
    pid_t pid = fork_into(&placement);
    if (pid == 0) {
        close(fds.status);
        close(joined[1]);
        close(init_report[0]);
        close(proc_fd);
        move_self(&placement);
        close_placement(&placement);
        run_sandbox(&plan, fds.stdio, fds.errpipe, joined[0], init_report[1], fds.gate);
    }
    close(joined[0]);
    close(init_report[1]);
    for (int i = 0; i < 3; i++)
        close(fds.stdio[i]);
    if (fds.gate >= 0)
        close(fds.gate);
    int traced = seize_and_place(pid, &placement, joined[1], fds.errpipe);
    watch(&fds, pid, traced, proc_fd, init_report[0], &cgroup);
}
