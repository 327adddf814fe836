/* The execution's cgroup made by its waiter (cgroup.h). The daemon plans it (the backends' plan_leaf: the
 * directories of every v1 hierarchy or the v2 leaf, and each limit's file and value, checked there) and the
 * waiter makes it first of all, as it removes it last of all (watch.c): the daemon's event loop hands no
 * thread the mkdir and the writes — a hop that cost more of its CPU than the work itself. */
#define _GNU_SOURCE
#include "cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "steps.h"

static const struct plan *creating;
static size_t made_count; /* of creating->cgroup_create, made so far */

/* Remove what was made (the deepest last made, so first), then fail the stage with `err`. */
__attribute__((noreturn, format(printf, 2, 3))) static void create_failed(int err, const char *fmt, ...);
static void create_failed(int err, const char *fmt, ...) {
    char what[STAGE_MAX_BYTES];
    va_list args;
    va_start(args, fmt);
    vsnprintf(what, sizeof what, fmt, args);
    va_end(args);
    while (made_count > 0)
        rmdir(creating->cgroup_create[--made_count]);
    step_refused(err, "%s: %s", what, strerror(err));
}

/* Whether the directory `path` is to be made in is on a cgroup file system (v1 or v2): the waiter makes nothing
 * anywhere else, whatever a plan says. */
static int parent_is_cgroupfs(const char *path) {
    const char *slash = strrchr(path, '/');
    char parent[PATH_MAX];
    struct statfs fs;
    if (slash == NULL || slash == path || snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path) >=
                                              (int)sizeof parent)
        return 0;
    return statfs(parent, &fs) == 0 && (fs.f_type == CGROUP_SUPER_MAGIC || fs.f_type == CGROUP2_SUPER_MAGIC);
}

size_t directory_of(const char **dirs, size_t count, const char *path) {
    const char *slash = strrchr(path, '/');
    if (slash == NULL || slash[1] == '\0' || strcmp(slash + 1, "..") == 0 || strcmp(slash + 1, ".") == 0)
        return count;
    size_t length = (size_t)(slash - path), i = 0;
    while (i < count && !(strlen(dirs[i]) == length && strncmp(dirs[i], path, length) == 0))
        i++;
    return i;
}

void create_cgroup(const struct plan *plan) {
    if (plan->cgroup_create_count == 0 && plan->cgroup_write_count == 0)
        return;
    step("create cgroup");
    creating = plan;
    for (size_t i = 0; i < plan->cgroup_create_count; i++)
        if (!parent_is_cgroupfs(plan->cgroup_create[i]))
            step_refused(EINVAL, "not in a cgroup file system: %s", plan->cgroup_create[i]);
    for (size_t i = 0; i < plan->cgroup_write_count; i++)
        if (directory_of(plan->cgroup_create, plan->cgroup_create_count, plan->cgroup_writes[i].path) ==
            plan->cgroup_create_count)
            step_refused(EINVAL, "not a file of a cgroup made here: %s", plan->cgroup_writes[i].path);
    for (size_t i = 0; i < plan->cgroup_create_count; i++) {
        if (mkdir(plan->cgroup_create[i], 0755) != 0)
            create_failed(errno, "mkdir %s", plan->cgroup_create[i]);
        made_count = i + 1;
    }
    for (size_t i = 0; i < plan->cgroup_write_count; i++) {
        const struct cgroup_write *limit = &plan->cgroup_writes[i];
        size_t length = strlen(limit->value);
        int fd = open(limit->path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        ssize_t written = fd < 0 ? -1 : write(fd, limit->value, length);
        int err = written < 0 ? errno : EIO; /* EIO: a short write, which a cgroup file never takes */
        if (fd >= 0)
            close(fd);
        if (written != (ssize_t)length)
            create_failed(err, "write %s to %s", limit->value, limit->path);
    }
}
