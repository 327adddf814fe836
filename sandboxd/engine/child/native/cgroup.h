/* The execution's cgroup, made by the sandbox's waiter for a sandbox alone in its cgroup (plan.h's
 * cgroup_create and cgroup_writes), before anything of the sandbox exists. */
#ifndef SANDBOXD_CGROUP_H
#define SANDBOXD_CGROUP_H

#include "plan.h"

/* Make the plan's directories, in order — each in a cgroup file system, each new: one of that name already there
 * is another execution's —
 * then write its limit files, in order, each value in one write(2), each a file of a directory made here,
 * opened without following a symlink and never created. On any failure what was made is removed and the
 * stage "create cgroup" fails, naming the directory or the file and the value: nothing of the sandbox runs
 * without its limits. Nothing to do for a plan without them (a call in a session: the daemon made its leaf). */
void create_cgroup(const struct plan *plan);

/* The index of the directory of `dirs` that `path` names a file directly in (not ".", "..", nor an empty name),
 * or `count` for none: a cgroup file the plan names must be one of the cgroup's own. */
size_t directory_of(const char **dirs, size_t count, const char *path);

#endif
