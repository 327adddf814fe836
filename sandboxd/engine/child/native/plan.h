/* The execution plan as the waiter reads it: what plan.py's JailPlan.encode writes — NUL-terminated
 * strings and decimal numbers in a fixed order, lists prefixed by their length, the two binary parts (the
 * launch message and the seccomp filter) prefixed by their size in bytes — so that nothing here parses more
 * than a count. */
#ifndef SANDBOXD_PLAN_H
#define SANDBOXD_PLAN_H

#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

#define PLAN_MAGIC "sandboxd-plan/2" /* plan.PLAN_MAGIC */

struct bind {
    const char *source, *target;
    int writable;
};

struct rlimit_entry {
    int resource;
    struct rlimit value;
};

struct etc_file {
    const char *name, *content;
};

struct cgroup_write {
    const char *path, *value;
};

struct blob {
    const char *data;
    size_t length;
};

struct plan {
    const char *hostname;
    pid_t join_pid; /* a call in a session: that process's namespaces and root; 0: a sandbox of its own */
    int gated;      /* a pooled sandbox: the handler-to-be waits at the gate for what to launch (launch.h) */
    uid_t uid;
    gid_t gid;
    size_t group_count;
    gid_t *groups;
    size_t cgroup_procs_count;
    const char **cgroup_procs;
    /* a sandbox alone in its cgroup: read once everything in it has ended, then removed (watch.c) */
    size_t cgroup_read_count, cgroup_removal_count;
    const char **cgroup_reads, **cgroup_removal;
    /* ... made by the waiter too: these directories, then these limit files written (cgroup.c) */
    size_t cgroup_create_count, cgroup_write_count;
    const char **cgroup_create;
    struct cgroup_write *cgroup_writes;
    size_t rlimit_count;
    struct rlimit_entry *rlimits;
    /* the root */
    const char *mountpoint;
    unsigned long long tmpfs_size_bytes;
    const char *workdir;
    const char *workdir_source; /* NULL: a tmpfs of its own */
    size_t system_bind_count, etc_bind_count, etc_file_count, bind_count;
    const char **system_binds, **etc_binds;
    struct etc_file *etc_files;
    struct bind *binds;
    struct blob launch, seccomp_filter;
};

/* Read the whole plan from `fd` (then closed) into `plan`; its strings point into memory kept for the
 * process's life. On a malformed plan: a report on `errpipe`, exit 127. */
void read_plan(int fd, int errpipe, struct plan *plan);

#endif
