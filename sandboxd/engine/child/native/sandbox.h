/* The sandbox's own processes (sandbox.c): its pid 1 and the handler-to-be, or a call's handler in a session. */
#ifndef SANDBOXD_SANDBOX_H
#define SANDBOXD_SANDBOX_H

#include "plan.h"

/* Pid 1 of the new pid namespace: build the sandbox, fork the handler as pid 2, become its init. `joined`: the
 * waiter's ack that this process is in its cgroup; `report_fd`: to the watch ("forked", then the init's
 * "status W"); `gate`: a pooled sandbox's, or -1. */
__attribute__((noreturn)) void run_sandbox(const struct plan *plan, const int stdio[3], int errpipe, int joined,
                                           int report_fd, int gate);

/* A call in a session: the waiter's child, born in the session's namespaces and root (its init adopts what the
 * call leaves behind). Once the waiter has put it in the call's cgroup, it becomes the handler exactly as pid 2
 * of a sandbox of its own does. */
__attribute__((noreturn)) void run_call(const struct plan *plan, const int stdio[3], int errpipe, int joined);

#endif
