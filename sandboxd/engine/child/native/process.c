/* Descriptors across the child path's execs (process.h). */
#define _GNU_SOURCE
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static int ascending(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

void close_all_except(const int *keep, size_t count) {
    int sorted[16];
    size_t kept = 0;
    for (size_t i = 0; i < count && kept < sizeof sorted / sizeof sorted[0]; i++)
        if (keep[i] >= 0)
            sorted[kept++] = keep[i];
    qsort(sorted, kept, sizeof sorted[0], ascending);
    int previous = -1;
    for (size_t i = 0; i < kept; i++) {
        if (sorted[i] > previous + 1)
            close_range((unsigned)previous + 1, (unsigned)sorted[i] - 1, 0);
        previous = sorted[i];
    }
    close_range((unsigned)previous + 1, ~0u, 0);
}

void run_helper(int helper_fd, char *const argv[], const int *passed, size_t count, int open_until_exec) {
    int keep[16];
    size_t kept = 0;
    for (size_t i = 0; i < count && kept < 14; i++)
        keep[kept++] = passed[i];
    keep[kept++] = helper_fd;
    keep[kept++] = open_until_exec;
    close_all_except(keep, kept);
    for (size_t i = 0; i < count; i++)
        if (passed[i] >= 0 && fcntl(passed[i], F_SETFD, 0) != 0)
            return;
    char *const no_environment[] = {NULL};
    execveat(helper_fd, "", argv, no_environment, AT_EMPTY_PATH);
}
