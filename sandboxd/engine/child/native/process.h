/* Descriptors of the waiter's processes (process.c). */
#ifndef SANDBOXD_PROCESS_H
#define SANDBOXD_PROCESS_H

#include <stddef.h>

/* Close every descriptor but the `count` of `keep` (-1 entries are ignored; at most 16). */
void close_all_except(const int *keep, size_t count);

#endif
