/* The handler's launch (launch.c). */
#ifndef SANDBOXD_LAUNCH_H
#define SANDBOXD_LAUNCH_H

enum { ERRPIPE_FD = 3, LAUNCH_FD = 4, FILTER_FD = 5 };

/* With the execution's stdio on 0-2, the error pipe on 3, what to launch on 4 (launch.py's format; with
 * `gated`, the gate of a pooled sandbox, where the wait is for the execution that takes it) and the seccomp
 * filter on 5: find the handler, install the filter, execve. Never returns: a failure is reported on 3. */
__attribute__((noreturn)) void run_launch(int gated);

#endif
