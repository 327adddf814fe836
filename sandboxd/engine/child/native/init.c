/* The init: pid 1 of a sandbox once it is built, as bubblewrap's and tini's — tiny, unprivileged, and there
 * only to be a real init (init.h).
 *
 * The handler runs as pid 2, so it behaves as on any host: a signal it sends itself without a handler kills it
 * (the kernel drops such signals for a namespace's init), and orphans are reaped instead of piling up as
 * zombies against pids.max. The init forwards the signals a supervisor sends (TERM, INT, HUP, …) to the
 * handler, reaps every child, and once the handler has ended kills what is left of the sandbox, reaps it, and
 * writes the handler's own wait status to the waiter ("status W\n"): the verdict stays the handler's.
 *
 * Pid 1 (sandbox.c) becomes it once it has forked the handler, still privileged, with nothing open but the
 * error pipe and its report to the watch. It drops its privileges first of all — not dumpable before anything
 * (the handler, of the same uid, must never open its /proc/1/mem: that would let a tool forge its own
 * verdict), then an empty bounding set, the groups and ids, no capability left, no_new_privs. A failure is
 * reported on the error pipe (report.h) and kills the handler; the error pipe is closed once all of it is done.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "init.h"

#include "privileges.h"
#include "report.h"

#define STAGE "init privileges"

/* What a supervisor or a terminal sends to stop, interrupt or poke a process: passed on to the handler. */
static const int forwarded_signals[] = {SIGTERM, SIGINT,  SIGHUP,  SIGQUIT, SIGUSR1,
                                        SIGUSR2, SIGWINCH, SIGALRM, SIGCONT, SIGTSTP};
#define FORWARDED_COUNT (sizeof forwarded_signals / sizeof forwarded_signals[0])

static pid_t handler_pid;
static int errpipe = -1;

__attribute__((noreturn)) static void drop_failed(const char *what) {
    int err = errno;
    kill(handler_pid, SIGKILL);
    fail(errpipe, STAGE, err, STAGE ": %s: %s", what, strerror(err));
}

static void drop_privileges(uid_t uid, gid_t gid, size_t group_count, const gid_t *groups) {
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        drop_failed("prctl(PR_SET_DUMPABLE)");
    if (drop_bounding_set() != 0)
        drop_failed("prctl(PR_CAPBSET_DROP)");
    if (setgroups(group_count, groups) != 0)
        drop_failed("setgroups");
    if (setresgid(gid, gid, gid) != 0)
        drop_failed("setresgid");
    if (setresuid(uid, uid, uid) != 0)
        drop_failed("setresuid");
    if (clear_capabilities() != 0)
        drop_failed("capset(0), PR_CAP_AMBIENT_CLEAR_ALL");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        drop_failed("prctl(PR_SET_NO_NEW_PRIVS)");
}

static void forward(int sig) {
    int saved = errno;
    kill(handler_pid, sig);
    errno = saved;
}

static void set_forwarding(void (*disposition)(int)) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = disposition;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < FORWARDED_COUNT; i++)
        sigaction(forwarded_signals[i], &action, NULL);
}

void run_init(int errpipe_fd, int report, pid_t handler, uid_t uid, gid_t gid, size_t group_count,
              const gid_t *groups) {
    enter(INIT_COMM);
    errpipe = errpipe_fd;
    handler_pid = handler;
    drop_privileges(uid, gid, group_count, groups);
    /* Before the error pipe closes: once the start is reported, a supervisor's signal must find a handler
     * here (the kernel drops a signal to a namespace's init that has none). */
    set_forwarding(forward);
    close(errpipe); /* the whole sandbox stands: "started" may be reported once the handler has exec'd */

    int handler_status = 0, handler_ended = 0;
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break; /* ECHILD: nothing is left */
        }
        if (pid == handler_pid) {
            handler_status = status;
            handler_ended = 1;
            set_forwarding(SIG_IGN);
            kill(-1, SIGKILL); /* everything of the sandbox but us goes with the handler */
        }
    }
    if (handler_ended)
        dprintf(report, "status %d\n", handler_status);
    _exit(0);
}
