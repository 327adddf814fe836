/* sandboxd-spawn: the spawner — a single-threaded fork server, started once by the daemon and kept warm.
 *
 * The daemon has threads and must never fork; this small static program has one thread and forks one waiter
 * per execution (waiter.c), which needs no exec: no interpreter, no dynamic loader, nothing to copy but a few
 * pages.
 *
 *   sandboxd-spawn CONTROL_FD
 *
 * Wire protocol — one AF_UNIX/SOCK_SEQPACKET socketpair (spawnclient.py is the other end):
 *
 *   spawner→daemon  {"op": "ready", "pid": P}, once at start
 *   daemon→spawner  "spawn J G", per execution, with (SCM_RIGHTS) stdin r, stdout w, stderr w; the plan (a
 *                   sealed memfd, plan.h); the write ends of the sandbox's error pipe and status pipe; when J is
 *                   1 the network namespace to join (or, for a call in a session, its pidfd); when G is 1 a
 *                   pooled sandbox's gate
 *
 * Nothing comes back per execution: the daemon reads the read ends of the two report pipes itself (reports.py):
 * the error pipe's record or its EOF (the handler passed execve), the watch's lines on the status pipe. A fork
 * that fails is reported on the error pipe here. Waiters are reaped as SIGCHLD says (a signalfd). EOF on the
 * control socket means the daemon is gone: the spawner exits, and its children follow through their
 * parent-death signals. A malformed request is a protocol violation: the spawner exits, named on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "report.h"
#include "waiter.h"

#define MAX_FDS 8                   /* stdio, plan, the two report pipes, join, gate */
#define MESSAGE_MAX_BYTES 64        /* "spawn J G" */
#define SOCKET_BUFFER_BYTES (4 << 20) /* spawnclient.SOCKET_BUFFER_BYTES */

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fputs("sandboxd-spawn: ", stderr);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

/* 0-2 open (a waiter's descriptors must land above them), as many descriptors as the hard limit allows, our
 * niceness back at any process's (the daemon serves above its sandboxes, which must not: each inherits ours). */
static void prepare_process(void) {
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            continue;
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || (null != fd && (dup2(null, fd) < 0 || close(null) < 0)))
            die("cannot open /dev/null: %s", strerror(errno));
    }
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    if (setpriority(PRIO_PROCESS, 0, 0) != 0)
        die("setpriority: %s", strerror(errno));
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    prctl(PR_SET_NAME, (unsigned long)"sandboxd-spawn", 0, 0, 0);
    signal(SIGINT, SIG_IGN); /* a terminal's ^C is for the daemon, which stops us by EOF */
    signal(SIGPIPE, SIG_IGN);
}

static void close_all(const int *fds, size_t count) {
    for (size_t i = 0; i < count; i++)
        close(fds[i]);
}

/* Fork the waiter of one request. */
static void spawn(const int *fds, int join, int gate) {
    struct fds passed = {{fds[0], fds[1], fds[2]}, fds[4], fds[5], join, gate};
    pid_t spawner = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGINT, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        run_waiter(spawner, fds[3], passed);
    }
    if (pid < 0) /* then EOF on both pipes: nothing ran */
        report(passed.errpipe, "spawn", errno, "spawn: fork: %s", strerror(errno));
}

/* One request; 0 at EOF (the daemon is gone). */
static int on_control(int control) {
    char message[MESSAGE_MAX_BYTES + 1];
    union {
        struct cmsghdr align;
        char buffer[CMSG_SPACE(MAX_FDS * sizeof(int))];
    } control_data;
    struct iovec iov = {message, MESSAGE_MAX_BYTES};
    struct msghdr header = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control_data.buffer,
                            .msg_controllen = sizeof control_data.buffer};
    ssize_t got = recvmsg(control, &header, MSG_CMSG_CLOEXEC);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (got < 0)
        die("control socket: %s", strerror(errno));
    int fds[MAX_FDS];
    size_t count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&header); c != NULL; c = CMSG_NXTHDR(&header, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < n && count < MAX_FDS; i++)
                memcpy(&fds[count++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    if (got == 0 && count == 0)
        return 0;
    message[got] = '\0';
    int join = 0, gate = 0, end = 0;
    if ((header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || sscanf(message, "spawn %d %d%n", &join, &gate, &end) != 2 ||
        end != got || (join | gate) & ~1 || count != 6 + (size_t)join + (size_t)gate) {
        close_all(fds, count);
        die("protocol violation: %.*s with %zu descriptors", (int)got, message, count);
    }
    spawn(fds, join ? fds[6] : -1, gate ? fds[6 + join] : -1);
    close_all(fds, count);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2)
        die("usage: sandboxd-spawn CONTROL_FD");
    int control = atoi(argv[1]);
    prepare_process();
    int buffer_bytes = SOCKET_BUFFER_BYTES;
    setsockopt(control, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
    fcntl(control, F_SETFD, FD_CLOEXEC);
    sigset_t child;
    sigemptyset(&child);
    sigaddset(&child, SIGCHLD);
    sigprocmask(SIG_BLOCK, &child, NULL);
    int reaper = signalfd(-1, &child, SFD_CLOEXEC | SFD_NONBLOCK);
    if (reaper < 0)
        die("signalfd: %s", strerror(errno));
    char ready[64];
    int length = snprintf(ready, sizeof ready, "{\"op\": \"ready\", \"pid\": %d}", getpid());
    if (send(control, ready, (size_t)length, 0) != length)
        die("control socket: %s", strerror(errno));
    struct pollfd polled[2] = {{control, POLLIN, 0}, {reaper, POLLIN, 0}};
    for (;;) {
        if (poll(polled, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll: %s", strerror(errno));
        }
        if (polled[1].revents) {
            struct signalfd_siginfo info;
            while (read(reaper, &info, sizeof info) > 0)
                continue;
            while (waitpid(-1, NULL, WNOHANG) > 0)
                continue;
        }
        if (polled[0].revents && !on_control(control))
            return 0;
    }
}
