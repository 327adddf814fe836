/* Descriptors of the waiter's processes, and whole reads and writes on them (process.c). */
#ifndef SANDBOXD_PROCESS_H
#define SANDBOXD_PROCESS_H

#include <stddef.h>

/* Close every descriptor but the `count` of `keep` (-1 entries are ignored; at most 16). */
void close_all_except(const int *keep, size_t count);

/* All of `fd` up to its end (then closed), NUL-terminated, its length in `*length`; NULL with errno set — E2BIG
 * past `max_bytes`, ENOMEM, or read's — on failure. */
char *read_to_end(int fd, size_t max_bytes, size_t *length);

/* All `length` bytes of `data` written to `fd` (EINTR retried): 0, or -1 with errno set. */
int write_all(int fd, const void *data, size_t length);

#endif
