/* Descriptors of the waiter's processes (process.h). */
#define _GNU_SOURCE
#include "process.h"

#include <stdlib.h>
#include <unistd.h>

static int ascending(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

void close_all_except(const int *keep, size_t count) {
    int sorted[16];
    size_t kept = 0;
    if (count > sizeof sorted / sizeof sorted[0])
        _exit(127); /* a caller's mistake, never a sandbox's input: nothing may run on */
    for (size_t i = 0; i < count; i++)
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
