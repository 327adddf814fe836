/* How a step of the child path says where it is and what failed: the stage in the process's comm (15 bytes)
 * while it runs, and on failure one "stage\0errno\0message" record on the close-on-exec error pipe, then
 * exit 127. EOF on that pipe with nothing read means the handler's execve succeeded (CPython's
 * _posixsubprocess pattern); the daemon reads it (reports.py). */
#ifndef SANDBOXD_REPORT_H
#define SANDBOXD_REPORT_H

#include <stdarg.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#define REPORT_MAX_BYTES 4000 /* report.REPORT_MAX_BYTES */

static inline void enter(const char *stage) { prctl(PR_SET_NAME, (unsigned long)stage, 0, 0, 0); }

/* Write the failure record of `stage` to `errpipe` (-1: none); the message is "fmt…" as formatted, prefixed
 * with nothing (the caller words it as "stage: what"). */
__attribute__((format(printf, 4, 0))) static inline void vreport(int errpipe, const char *stage, int err,
                                                                   const char *fmt, va_list args) {
    char record[REPORT_MAX_BYTES];
    int head = snprintf(record, sizeof record, "%s%c%d%c", stage, '\0', err, '\0');
    int body = vsnprintf(record + head, sizeof record - (size_t)head, fmt, args);
    size_t length = (size_t)head + (body < 0 ? 0 : (size_t)body);
    if (length > sizeof record - 1)
        length = sizeof record - 1;
    if (errpipe >= 0) {
        ssize_t written = write(errpipe, record, length);
        (void)written; /* nothing more to do if the daemon's end is gone */
    }
}

__attribute__((format(printf, 4, 5))) static inline void report(int errpipe, const char *stage, int err,
                                                                  const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vreport(errpipe, stage, err, fmt, args);
    va_end(args);
}

/* Report, then exit 127. */
__attribute__((format(printf, 4, 5), noreturn)) static inline void fail(int errpipe, const char *stage, int err,
                                                                          const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vreport(errpipe, stage, err, fmt, args);
    va_end(args);
    _exit(127);
}

#endif
