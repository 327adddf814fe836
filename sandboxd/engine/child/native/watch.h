/* The watch over a sandbox (watch.c). */
#ifndef SANDBOXD_WATCH_H
#define SANDBOXD_WATCH_H

#include <sys/types.h>

/* Watch `first` — the sandbox's pid 1 (with `init_fd`: its init's "forked" and "status W" lines) or, with
 * `init_fd` -1, a call in a session: its handler itself — until it has ended, as its tracer (`traced`) and
 * parent; report on `status_fd`. `proc_fd`: the host's /proc (O_PATH). Never returns. */
__attribute__((noreturn)) void run_watch(int status_fd, int proc_fd, pid_t first, int traced, int init_fd);

#endif
