/* The step a process of the waiter is at, and the report of a failure in it (report.h): the stage is
 * named in the process's comm as it is entered — so a sandbox that hangs in its setup is named by the stage
 * it hangs in — and a failure is "STAGE: what", then exit 127. There is no "continue anyway" path. */
#ifndef SANDBOXD_STEPS_H
#define SANDBOXD_STEPS_H

#include <errno.h>
#include <stdarg.h>

#define STAGE_MAX_BYTES 1024

extern int step_errpipe;                 /* where a failure is reported */
extern char step_stage[STAGE_MAX_BYTES]; /* the stage entered last */

/* Enter the stage named by the format (its first 15 bytes in comm). */
__attribute__((format(printf, 1, 2))) void step(const char *fmt, ...);

/* The stage failed with `err`: "STAGE: strerror(err)". */
__attribute__((noreturn)) void step_failed(int err);

/* The stage failed with `err`, for the reason the format gives: "STAGE: reason". */
__attribute__((noreturn, format(printf, 2, 3))) void step_refused(int err, const char *fmt, ...);

/* `result` < 0: the stage failed with errno. */
static inline void check(long result) {
    if (result < 0)
        step_failed(errno);
}

#endif
