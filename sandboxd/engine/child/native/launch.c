/* The handler's last steps before its execve (launch.h).
 *
 * The handler-to-be (sandbox.c) takes them once its privileges are gone — uid, groups, capabilities,
 * no_new_privs, rlimits, working directory — with:
 *
 *   fd 0-2  the execution's stdio            fd 4  what to run (launch.py's format), read to its end
 *   fd 3    the error pipe (report.h)        fd 5  the seccomp filter: struct sock_filter[], read to its end
 *
 * Gated (a pooled sandbox), fd 4 is the sandbox's gate: the wait there is for the execution that takes it,
 * and an end with nothing read means the pool let it go unused. Then: find the handler on the search path,
 * install the filter — last, so nothing of ours runs under it but the execve and the report of its failure —
 * and execve. Any failure: one report on fd 3, exit 127, nothing run.
 *
 * GATED_FILTERED installs the filter before the gate instead (the kernel's ~0.5 ms of building its cache for
 * a large filter is then spent while the sandbox is built ahead, not on the request), when the daemon has found
 * that the filter always allows every syscall made from the gate to the execve (seccomp/constant.py's
 * LAUNCH_AFTER_GATE): read and close (the gate), newfstatat and faccessat (finding the handler), execve, and
 * write and exit_group (a failure's report). Everything else is done before the filter: the buffers are
 * allocated, the stage named; after it no allocation, no prctl — each of those is a syscall the filter was not
 * checked for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "launch.h"
#include "process.h"
#include "report.h"

#define LAUNCH_MAX_BYTES (16u << 20) /* above any argv and environment execve accepts (ARG_MAX) */
#define FILTER_MAX_BYTES (4096u * sizeof(struct sock_filter)) /* BPF_MAXINSNS */
#define GATE_MAX_BYTES (64u << 10) /* above pool.GO_MAX_BYTES, which stays below a pipe's capacity */

static const char *stage = "launch";

__attribute__((noreturn)) static void fail_errno(int err) {
    fail(ERRPIPE_FD, stage, err, "%s: %s", stage, strerror(err));
}

/* All of `fd` up to its end; `*length` bytes, NUL-terminated. */
static char *read_all(int fd, size_t max_bytes, size_t *length, const char *too_large) {
    char *data = read_to_end(fd, max_bytes, length);
    if (data == NULL && errno == E2BIG)
        fail(ERRPIPE_FD, stage, E2BIG, "%s: %s", stage, too_large);
    if (data == NULL)
        fail_errno(errno);
    return data;
}

/* The NUL-terminated strings of data[0:length] into `*out` (NULL-terminated; allocated here unless the caller
 * gave room for them); their number. */
static size_t split(char *data, size_t length, char ***out) {
    size_t count = 0;
    for (size_t i = 0; i < length; i++)
        count += data[i] == '\0';
    char **strings = *out != NULL ? *out : calloc(count + 2, sizeof *strings); /* one more: the argv's NULL */
    if (strings == NULL)
        fail_errno(ENOMEM);
    for (size_t i = 0, at = 0; i < count; i++) {
        strings[i] = data + at;
        at += strlen(data + at) + 1;
    }
    *out = strings;
    return count;
}

/* By the syscalls seccomp/constant.py names, whatever the C library would use for stat() and access(). */
static int executable_file(const char *path) {
    struct stat st;
    return syscall(SYS_newfstatat, AT_FDCWD, path, &st, 0) == 0 && S_ISREG(st.st_mode) &&
           syscall(SYS_faccessat, AT_FDCWD, path, X_OK) == 0;
}

static char candidate[PATH_MAX]; /* no allocation after the gate */

/* `program` itself when it holds a slash, else the first executable file of that name on `search_path`
 * (empty entries skipped; a directory too long for a path skipped as well). */
static const char *resolve(const char *program, const char *search_path) {
    if (strchr(program, '/') != NULL) {
        if (executable_file(program))
            return program;
        fail(ERRPIPE_FD, stage, ENOENT, "handler not found or not executable: %s", program);
    }
    size_t program_len = strlen(program);
    for (const char *dir = search_path; *dir != '\0';) {
        size_t dir_len = strcspn(dir, ":");
        if (dir_len > 0 && dir_len + program_len + 2 <= sizeof candidate) {
            memcpy(candidate, dir, dir_len);
            size_t at = dir_len;
            if (candidate[at - 1] != '/')
                candidate[at++] = '/';
            memcpy(candidate + at, program, program_len + 1);
            if (executable_file(candidate))
                return candidate;
        }
        dir += dir_len + (dir[dir_len] == ':');
    }
    fail(ERRPIPE_FD, stage, ENOENT, "handler not found or not executable: %s (searched PATH=%s)", program,
         search_path);
}

static void install_filter(const char *filter, size_t filter_bytes) {
    if (filter_bytes == 0 || filter_bytes % sizeof(struct sock_filter) != 0)
        fail(ERRPIPE_FD, "seccomp", EINVAL, "seccomp: %zu bytes are not a non-empty array of 8-byte instructions",
             filter_bytes);
    struct sock_fprog program = {(unsigned short)(filter_bytes / sizeof(struct sock_filter)),
                                 (struct sock_filter *)filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) != 0)
        fail(ERRPIPE_FD, "seccomp", errno, "seccomp: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): %s",
             strerror(errno));
}

/* What to launch, read from `fd` to its end into `buffer` (`capacity` bytes, NUL-terminated) by read and close
 * alone; its length. */
static size_t read_gate(int fd, char *buffer, size_t capacity) {
    size_t size = 0;
    for (;;) {
        ssize_t got = read(fd, buffer + size, capacity - 1 - size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            fail_errno(errno);
        if (got == 0)
            break;
        size += (size_t)got;
        if (size == capacity - 1)
            fail(ERRPIPE_FD, stage, E2BIG, "%s: the execution's argv and environment are too large", stage);
    }
    close(fd);
    buffer[size] = '\0';
    return size;
}

void run_launch(enum launch_mode mode) {
    if (fcntl(ERRPIPE_FD, F_SETFD, FD_CLOEXEC) < 0) /* reaches EOF when the handler's execve succeeds */
        _exit(127);
    int gated = mode != LAUNCH_NOW;
    stage = gated ? "pooled" : "launch";
    enter(stage);
    size_t filter_bytes;
    char *filter = read_all(FILTER_FD, FILTER_MAX_BYTES, &filter_bytes, "the seccomp filter is too long");
    size_t length;
    char *launch;
    char **strings;
    if (mode == GATED_FILTERED) {
        /* Everything allocated before the filter; the gate's message is below a pipe's capacity (pool.py). */
        launch = malloc(GATE_MAX_BYTES);
        strings = calloc(GATE_MAX_BYTES + 2, sizeof *strings);
        if (launch == NULL || strings == NULL)
            fail_errno(ENOMEM);
        install_filter(filter, filter_bytes);
        length = read_gate(LAUNCH_FD, launch, GATE_MAX_BYTES);
    } else {
        launch = read_all(LAUNCH_FD, LAUNCH_MAX_BYTES, &length, "the execution's argv and environment are too large");
        strings = NULL;
    }
    if (length == 0 && gated)
        fail(ERRPIPE_FD, stage, 0, "%s: the sandbox was released unused", stage);
    size_t count = split(launch, length, &strings);
    char *end = NULL;
    unsigned long handler_argc = count >= 2 ? strtoul(strings[1], &end, 10) : 0;
    if (length == 0 || launch[length - 1] != '\0' || end == NULL || *end != '\0' || handler_argc == 0 ||
        handler_argc > count - 2)
        fail(ERRPIPE_FD, stage, EINVAL, "%s: malformed argv and environment (%zu bytes)", stage, length);
    const char *search_path = strings[0];
    char **handler_argv = strings + 2;
    char **handler_env = handler_argv + handler_argc + 1; /* past the argv's NULL, made just below */
    memmove(handler_env, handler_argv + handler_argc, (count - 2 - handler_argc + 1) * sizeof *strings);
    handler_argv[handler_argc] = NULL;

    stage = "find handler";
    if (mode != GATED_FILTERED)
        enter(stage);
    const char *path = resolve(handler_argv[0], search_path);

    if (mode != GATED_FILTERED) {
        stage = "seccomp";
        enter(stage);
        install_filter(filter, filter_bytes);
    }
    stage = "execve";
    execve(path, handler_argv, handler_env);
    fail_errno(errno);
}
