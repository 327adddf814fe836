/* The watch over a sandbox (watch.c). */
#ifndef SANDBOXD_WATCH_H
#define SANDBOXD_WATCH_H

#include <stddef.h>
#include <sys/types.h>

#define FINAL_CGROUP_MAX 8 /* directories (v1: one per hierarchy) and files read, each */

/* A sandbox alone in its cgroup: its directories (`leaf_fds`, O_PATH; removed in this order through their
 * parents' `parent_fds` by `leaf_names`) and the files its accounting is read from once everything in it has
 * ended (`read_names` in leaf `read_leaf`), opened by the waiter while the host's paths still meant the
 * host's. Counts of 0: neither (a session's). */
struct final_cgroup {
    size_t leaf_count, read_count;
    int leaf_fds[FINAL_CGROUP_MAX], parent_fds[FINAL_CGROUP_MAX];
    const char *leaf_names[FINAL_CGROUP_MAX];
    size_t read_leaf[FINAL_CGROUP_MAX];
    const char *read_names[FINAL_CGROUP_MAX];
};

/* Watch `first` — the sandbox's pid 1 (with `init_fd`: its init's "forked" and "status W" lines) or, with
 * `init_fd` -1, a call in a session: its handler itself — until it has ended, as its tracer (`traced`) and
 * parent; report on `status_fd`. `proc_fd`: the host's /proc (O_PATH). Then `cgroup`'s reads and removal.
 * Never returns. */
__attribute__((noreturn)) void run_watch(int status_fd, int proc_fd, pid_t first, int traced, int init_fd,
                                         const struct final_cgroup *cgroup);

#endif
