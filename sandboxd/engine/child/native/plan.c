/* Reading the execution plan (plan.h): one pass over the bytes, each field checked to be there. */
#define _GNU_SOURCE
#include "plan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch.h"
#include "process.h"
#include "report.h"

#define PLAN_MAX_BYTES (64u << 20) /* above anything the daemon admits as a request */
#define STAGE "plan"

struct cursor {
    const char *at, *end;
    int errpipe;
};

__attribute__((noreturn)) static void malformed(const struct cursor *c, const char *what) {
    fail(c->errpipe, STAGE, EINVAL, STAGE ": malformed execution plan: %s", what);
}

static const char *next_string(struct cursor *c) {
    const char *nul = memchr(c->at, '\0', (size_t)(c->end - c->at));
    if (nul == NULL)
        malformed(c, "it ends inside a field");
    const char *string = c->at;
    c->at = nul + 1;
    return string;
}

static unsigned long long next_number(struct cursor *c) {
    const char *text = next_string(c);
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-')
        malformed(c, "a number field is not a number");
    return value;
}

static size_t next_count(struct cursor *c) {
    unsigned long long count = next_number(c);
    if (count > (unsigned long long)(c->end - c->at)) /* every item takes a byte at least */
        malformed(c, "a list is longer than the plan");
    return (size_t)count;
}

static void *items(const struct cursor *c, size_t count, size_t item_bytes) {
    void *array = calloc(count + 1, item_bytes);
    if (array == NULL)
        fail(c->errpipe, STAGE, ENOMEM, STAGE ": %s", strerror(ENOMEM));
    return array;
}

static struct blob next_blob(struct cursor *c) {
    unsigned long long length = next_number(c);
    if (length > (unsigned long long)(c->end - c->at))
        malformed(c, "a binary field is longer than the plan");
    struct blob blob = {c->at, (size_t)length};
    c->at += length;
    return blob;
}

static const char **next_strings(struct cursor *c, size_t *count) {
    *count = next_count(c);
    const char **strings = items(c, *count, sizeof *strings);
    for (size_t i = 0; i < *count; i++)
        strings[i] = next_string(c);
    return strings;
}

void read_plan(int fd, int errpipe, struct plan *plan) {
    size_t length;
    char *data = read_to_end(fd, PLAN_MAX_BYTES, &length);
    if (data == NULL && errno == E2BIG)
        fail(errpipe, STAGE, E2BIG, STAGE ": the execution plan is larger than %u bytes", PLAN_MAX_BYTES);
    if (data == NULL)
        fail(errpipe, STAGE, errno, STAGE ": %s", strerror(errno));
    struct cursor c = {data, data + length, errpipe};
    memset(plan, 0, sizeof *plan);
    if (strcmp(next_string(&c), PLAN_MAGIC) != 0)
        malformed(&c, "not a plan of this version (" PLAN_MAGIC ")");
    plan->hostname = next_string(&c);
    plan->join_pid = (pid_t)next_number(&c);
    unsigned long long gated = next_number(&c);
    if (gated > GATED_FILTERED)
        malformed(&c, "the gate's mode is not one the launch knows");
    plan->gated = (int)gated;
    plan->uid = (uid_t)next_number(&c);
    plan->gid = (gid_t)next_number(&c);
    plan->group_count = next_count(&c);
    plan->groups = items(&c, plan->group_count, sizeof *plan->groups);
    for (size_t i = 0; i < plan->group_count; i++)
        plan->groups[i] = (gid_t)next_number(&c);
    plan->cgroup_procs = next_strings(&c, &plan->cgroup_procs_count);
    plan->cgroup_reads = next_strings(&c, &plan->cgroup_read_count);
    plan->cgroup_removal = next_strings(&c, &plan->cgroup_removal_count);
    plan->cgroup_create = next_strings(&c, &plan->cgroup_create_count);
    plan->cgroup_write_count = next_count(&c);
    plan->cgroup_writes = items(&c, plan->cgroup_write_count, sizeof *plan->cgroup_writes);
    for (size_t i = 0; i < plan->cgroup_write_count; i++) {
        plan->cgroup_writes[i].path = next_string(&c);
        plan->cgroup_writes[i].value = next_string(&c);
    }
    plan->rlimit_count = next_count(&c);
    plan->rlimits = items(&c, plan->rlimit_count, sizeof *plan->rlimits);
    for (size_t i = 0; i < plan->rlimit_count; i++) {
        plan->rlimits[i].resource = (int)next_number(&c);
        plan->rlimits[i].value.rlim_cur = (rlim_t)next_number(&c);
        plan->rlimits[i].value.rlim_max = (rlim_t)next_number(&c);
    }
    plan->mountpoint = next_string(&c);
    plan->tmpfs_size_bytes = next_number(&c);
    plan->workdir = next_string(&c);
    plan->workdir_source = next_string(&c);
    if (plan->workdir_source[0] == '\0')
        plan->workdir_source = NULL;
    plan->system_binds = next_strings(&c, &plan->system_bind_count);
    plan->etc_binds = next_strings(&c, &plan->etc_bind_count);
    plan->etc_file_count = next_count(&c);
    plan->etc_files = items(&c, plan->etc_file_count, sizeof *plan->etc_files);
    for (size_t i = 0; i < plan->etc_file_count; i++) {
        plan->etc_files[i].name = next_string(&c);
        plan->etc_files[i].content = next_string(&c);
    }
    plan->bind_count = next_count(&c);
    plan->binds = items(&c, plan->bind_count, sizeof *plan->binds);
    for (size_t i = 0; i < plan->bind_count; i++) {
        plan->binds[i].source = next_string(&c);
        plan->binds[i].target = next_string(&c);
        plan->binds[i].writable = next_number(&c) != 0;
    }
    plan->launch = next_blob(&c);
    plan->seccomp_filter = next_blob(&c);
    if (c.at != c.end)
        malformed(&c, "bytes after its last field");
}
