/* Descriptors across the child path's execs (process.c). */
#ifndef SANDBOXD_PROCESS_H
#define SANDBOXD_PROCESS_H

#include <stddef.h>

#define INIT_NAME "sandbox-init"   /* helpers.INIT_NAME */
#define EXEC_NAME "sandbox-exec"   /* helpers.EXEC_NAME */
#define WATCH_NAME "sandbox-watch" /* helpers.WATCH_NAME */

/* The other helpers, opened once by the spawner (O_PATH) and run by descriptor: after pivot_root their host
 * paths are out of reach, and an upgrade that replaces the files does not mix versions. */
struct helpers {
    int init_fd, exec_fd, watch_fd;
};

/* Close every descriptor but the `count` of `keep` (-1 entries are ignored). */
void close_all_except(const int *keep, size_t count);

/* Become the helper `helper_fd` (execveat, no environment): every descriptor closed but the `count` of
 * `passed` (made inheritable: the helper is told their numbers in `argv`) and `open_until_exec` (-1: none;
 * close-on-exec, there to report a failed execve). Returns only on failure, with errno set. */
void run_helper(int helper_fd, char *const argv[], const int *passed, size_t count, int open_until_exec);

#endif
