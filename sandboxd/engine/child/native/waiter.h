/* The waiter (waiter.c). */
#ifndef SANDBOXD_WAITER_H
#define SANDBOXD_WAITER_H

#include <sys/types.h>

/* What the daemon passed for one execution: its stdio; the write ends of its error pipe (report.h) and status
 * pipe; `join` a network namespace made beforehand to join instead of a fresh one — or, for a call in a
 * session, a pidfd of the session's process — or -1; `gate` a pooled sandbox's gate, or -1. */
struct fds {
    int stdio[3], errpipe, status, join, gate;
};

/* In a child of the spawner (`spawner`, its pid) with `plan_fd` (plan.h) and `fds`, all close-on-exec: build
 * and watch the sandbox. Never returns. */
__attribute__((noreturn)) void run_waiter(pid_t spawner, int plan_fd, struct fds fds);

#endif
