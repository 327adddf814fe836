/* The sandbox's init (init.c). */
#ifndef SANDBOXD_INIT_H
#define SANDBOXD_INIT_H

#include <stddef.h>
#include <sys/types.h>

#define INIT_COMM "sandbox-init" /* program.INIT_NAME: the hung-setup report skips the init's comm */

/* Become the sandbox's init, pid 1, with `handler` its child: drop every privilege, forward a supervisor's
 * signals to the handler, reap, and once the handler has ended kill the rest and write its wait status to
 * `report` ("status W\n"). Never returns. */
__attribute__((noreturn)) void run_init(int errpipe, int report, pid_t handler, uid_t uid, gid_t gid,
                                        size_t group_count, const gid_t *groups);

#endif
