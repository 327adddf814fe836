/* The handler's launch (launch.c). */
#ifndef SANDBOXD_LAUNCH_H
#define SANDBOXD_LAUNCH_H

enum { ERRPIPE_FD = 3, LAUNCH_FD = 4, FILTER_FD = 5 };

/* How the launch starts: at once (LAUNCH_NOW), or at a pooled sandbox's gate with the filter installed after
 * it (GATED) or before it (GATED_FILTERED: the daemon found that the filter always allows every syscall the
 * launch makes after the gate — seccomp/constant.py). The plan's "gated" field carries it. */
enum launch_mode { LAUNCH_NOW = 0, GATED = 1, GATED_FILTERED = 2 };

/* With the execution's stdio on 0-2, the error pipe on 3, what to launch on 4 (launch.py's format; gated, the
 * gate of a pooled sandbox, where the wait is for the execution that takes it) and the seccomp filter on 5:
 * find the handler, install the filter, execve. Never returns: a failure is reported on 3. */
__attribute__((noreturn)) void run_launch(enum launch_mode mode);

#endif
