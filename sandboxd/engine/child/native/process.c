/* Descriptors of the waiter's processes, and whole reads and writes on them (process.h). */
#define _GNU_SOURCE
#include "process.h"

#include <errno.h>
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

char *read_to_end(int fd, size_t max_bytes, size_t *length) {
    size_t size = 0, capacity = 65536;
    char *data = malloc(capacity + 1);
    for (;;) {
        if (data == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        if (size == capacity) {
            capacity *= 2;
            char *grown = realloc(data, capacity + 1);
            if (grown == NULL)
                free(data);
            data = grown;
            continue;
        }
        ssize_t got = read(fd, data + size, capacity - size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 || (got > 0 && size + (size_t)got > max_bytes)) {
            int err = got < 0 ? errno : E2BIG;
            free(data);
            errno = err;
            return NULL;
        }
        if (got == 0)
            break;
        size += (size_t)got;
    }
    close(fd);
    data[size] = '\0';
    *length = size;
    return data;
}

int write_all(int fd, const void *data, size_t length) {
    for (const char *at = data; length > 0;) {
        ssize_t written = write(fd, at, length);
        if (written < 0 && errno == EINTR)
            continue;
        if (written < 0)
            return -1;
        at += written;
        length -= (size_t)written;
    }
    return 0;
}
