/* The current step of a waiter process (steps.h). */
#define _GNU_SOURCE
#include "steps.h"

#include <stdio.h>
#include <string.h>

#include "report.h"

int step_errpipe = -1;
char step_stage[STAGE_MAX_BYTES] = "waiter";

void step(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(step_stage, sizeof step_stage, fmt, args);
    va_end(args);
    enter(step_stage);
}

void step_failed(int err) { fail(step_errpipe, step_stage, err, "%s: %s", step_stage, strerror(err)); }

void step_refused(int err, const char *fmt, ...) {
    char reason[REPORT_MAX_BYTES];
    va_list args;
    va_start(args, fmt);
    vsnprintf(reason, sizeof reason, fmt, args);
    va_end(args);
    fail(step_errpipe, step_stage, err, "%s: %s", step_stage, reason);
}
