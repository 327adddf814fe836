/* A fresh, read-only root for the sandbox, and the pivot into it (rootfs.h).
 *
 * Runs in the sandbox's pid 1, inside its private mount namespace, before privileges are dropped. The root is a
 * small tmpfs mounted on an empty host directory *in this namespace only*, so nothing is created on the host
 * and nothing is left behind if the whole tree is killed.
 *
 * Host-side paths are never resolved through a symlink a tool could have planted: every bind source and target
 * is walked component by component with O_PATH|O_NOFOLLOW (runc's answer to the symlink-race CVEs of this
 * field), and a bind is made from those descriptors alone with the mount API of Linux 5.12: the source's mount
 * cloned (open_tree), its flags set while it is still detached (mount_setattr), then attached on the target
 * (move_mount) — no path is resolved again, and no bind is ever visible writable or with suid, even to us.
 */
#define _GNU_SOURCE
#include "rootfs.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "process.h"
#include "steps.h"

#define RO_FLAGS (MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)

/* /proc as runc masks it (its maskedPaths / readonlyPaths): kernel memory, keys, timers and scheduler
 * internals, hardware trees hidden; the sysctl, bus, filesystem and irq trees read-only (test_proc.py checks
 * each against runc's lists). */
static const char *const proc_masked_files[] = {"kcore",       "keys",          "timer_list", "timer_stats",
                                                "sched_debug", "latency_stats", "sysrq-trigger"};
static const char *const proc_masked_dirs[] = {"acpi", "scsi", "asound"};
static const char *const proc_read_only[] = {"sys", "bus", "fs", "irq"};
static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom"};
static const char *const dev_links[][2] = {
    {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}};
#define COUNT(array) (sizeof array / sizeof array[0])

/* The path the format makes, in `out` (PATH_MAX). */
__attribute__((format(printf, 2, 3))) static char *path_of(char *out, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int length = vsnprintf(out, PATH_MAX, fmt, args);
    va_end(args);
    if (length < 0 || length >= PATH_MAX)
        step_refused(ENAMETOOLONG, "a path is longer than %d bytes: %.64s…", PATH_MAX, out);
    return out;
}

/* `root` + `path` in `out` (PATH_MAX). */
static char *under(char *out, const char *root, const char *path) { return path_of(out, "%s%s", root, path); }

/* The next component of the path at `*rest` (NUL-terminated in place), or NULL at its end. */
static char *next_part(char **rest) {
    char *part = *rest;
    while (*part == '/')
        part++;
    if (*part == '\0')
        return NULL;
    char *slash = strchr(part, '/');
    if (slash != NULL) {
        *slash = '\0';
        *rest = slash + 1;
    } else {
        *rest = part + strlen(part);
    }
    return part;
}

static int last_part(const char *rest) {
    while (*rest == '/')
        rest++;
    return *rest == '\0';
}

/* One component further down from `fd` (closed): `part` opened with O_PATH, never through a symlink; `st` its
 * status. */
static int step_down(int fd, const char *part, struct stat *st) {
    int next = openat(fd, part, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    check(next);
    close(fd);
    check(fstat(next, st));
    return next;
}

/* `path` opened with O_PATH, refusing a symlink in any component; relative to `base_fd` if >= 0. */
static int open_nofollow(const char *path, int base_fd) {
    char copy[PATH_MAX], *rest = copy, *part;
    if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy)
        step_refused(ENAMETOOLONG, "path too long: %s", path);
    for (char *scan = copy, *p; (p = next_part(&scan)) != NULL;) /* '..' anywhere: refused before any open */
        if (strcmp(p, "..") == 0)
            step_refused(EINVAL, "'..' in path '%s'", path);
    snprintf(copy, sizeof copy, "%s", path);
    int fd = base_fd < 0 ? open("/", O_PATH | O_DIRECTORY | O_CLOEXEC) : fcntl(base_fd, F_DUPFD_CLOEXEC, 0);
    check(fd);
    while ((part = next_part(&rest)) != NULL) {
        struct stat st;
        fd = step_down(fd, part, &st);
        if (S_ISLNK(st.st_mode))
            step_refused(ELOOP, "refusing symlink at '%s' in '%s'", part, path);
    }
    return fd;
}

/* `target` created below the root without following symlinks (a directory, or a file when not `is_dir`);
 * an O_PATH descriptor of it. */
static int make_target(int root_fd, const char *target, int is_dir) {
    char copy[PATH_MAX], *rest = copy, *part;
    if (snprintf(copy, sizeof copy, "%s", target) >= (int)sizeof copy)
        step_refused(ENAMETOOLONG, "path too long: %s", target);
    int fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    check(fd);
    while ((part = next_part(&rest)) != NULL) {
        int last = last_part(rest);
        if (last && !is_dir) {
            /* O_EXCL: never open what is there (a FIFO planted at the target would block the open) */
            int file = openat(fd, part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (file < 0 && errno != EEXIST)
                step_failed(errno);
            if (file >= 0)
                close(file);
        } else if (mkdirat(fd, part, 0755) != 0 && errno != EEXIST) {
            step_failed(errno);
        }
        struct stat st;
        fd = step_down(fd, part, &st);
        if (S_ISLNK(st.st_mode))
            step_refused(ELOOP, "refusing symlink at '%s' in sandbox path '%s'", part, target);
        int wanted_dir = is_dir || !last;
        if ((S_ISDIR(st.st_mode) != 0) != wanted_dir || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
            step_refused(wanted_dir ? ENOTDIR : EISDIR, "refusing '%s' in sandbox path '%s': not %s", part, target,
                         wanted_dir ? "a directory" : "a regular file");
    }
    return fd;
}

/* Bind `source` (host) at `target` (below the root), non-recursively: host submounts stay hidden. Its nosuid,
 * noexec or nodev (a device node: nodev off) and read-only flags are exactly these, whatever the source mount
 * had, as a bind remount would set them; set before it is attached. */
static void bind(int root_fd, const char *source, const char *target, int writable, int device) {
    int src = open_nofollow(source, -1);
    struct stat st;
    check(fstat(src, &st));
    int tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    check(tree);
    close(src);
    struct mount_attr attr = {0};
    attr.attr_set = MOUNT_ATTR_NOSUID | (device ? MOUNT_ATTR_NOEXEC : MOUNT_ATTR_NODEV) |
                    (writable ? 0 : MOUNT_ATTR_RDONLY);
    attr.attr_clr = (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC) & ~attr.attr_set;
    check(mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr));
    int dst = make_target(root_fd, target, S_ISDIR(st.st_mode));
    check(move_mount(tree, "", dst, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
    close(tree);
    close(dst);
}

/* mkdir -p (mode before the umask); what exists is left as it is. */
static void make_dirs(const char *path, mode_t mode) {
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    for (char *slash = strchr(copy + 1, '/');; slash = strchr(slash + 1, '/')) {
        if (slash != NULL)
            *slash = '\0';
        if (mkdir(copy, mode) != 0 && errno != EEXIST)
            step_failed(errno);
        if (slash == NULL)
            return;
        *slash = '/';
    }
}

static void tmpfs(const char *path, const char *options, unsigned long flags) {
    make_dirs(path, 0777);
    check(mount("tmpfs", path, "tmpfs", flags, options));
}

/* `path` copied as the host has it: a symlink as a symlink (merged /usr: /bin -> usr/bin), else bound
 * read-only; absent: skipped. */
static void copy_host_path(const char *root, int root_fd, const char *path, int make_parent) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return;
        step_failed(errno);
    }
    if (!S_ISLNK(st.st_mode)) {
        bind(root_fd, path, path, 0, 0);
        return;
    }
    char link[PATH_MAX], at[PATH_MAX];
    ssize_t length = readlink(path, link, sizeof link - 1);
    check(length);
    link[length] = '\0';
    under(at, root, path);
    if (make_parent) {
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", at);
        *strrchr(parent, '/') = '\0';
        make_dirs(parent, 0777);
    }
    check(symlink(link, at));
}

static void write_file(const char *path, const char *content) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
    check(fd);
    check(write_all(fd, content, strlen(content)));
    close(fd);
}

static void etc(const char *root, int root_fd, const struct plan *plan) {
    char path[PATH_MAX], file[PATH_MAX];
    make_dirs(under(path, root, "/etc"), 0755);
    for (size_t i = 0; i < plan->etc_file_count; i++) {
        path_of(file, "%s/%s", path, plan->etc_files[i].name);
        write_file(file, plan->etc_files[i].content);
    }
    for (size_t i = 0; i < plan->etc_bind_count; i++)
        copy_host_path(root, root_fd, plan->etc_binds[i], 1);
}

static int exists(const char *path, int want_dir) {
    struct stat st;
    return (want_dir ? stat(path, &st) : lstat(path, &st)) == 0 && (!want_dir || S_ISDIR(st.st_mode));
}

static void mask_proc(const char *proc, int root_fd) {
    char path[PATH_MAX], target[PATH_MAX];
    for (size_t i = 0; i < COUNT(proc_masked_files); i++)
        if (exists(path_of(path, "%s/%s", proc, proc_masked_files[i]), 0))
            bind(root_fd, "/dev/null", path_of(target, "/proc/%s", proc_masked_files[i]), 0, 1);
    for (size_t i = 0; i < COUNT(proc_masked_dirs); i++)
        if (exists(path_of(path, "%s/%s", proc, proc_masked_dirs[i]), 1))
            check(mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555"));
    for (size_t i = 0; i < COUNT(proc_read_only); i++) {
        if (!exists(path_of(path, "%s/%s", proc, proc_read_only[i]), 1))
            continue;
        check(mount(path, path, NULL, MS_BIND | MS_REC, NULL));
        check(mount(NULL, path, NULL, RO_FLAGS | MS_NOEXEC, NULL));
    }
}

static void dev(const char *root, int root_fd, unsigned long long tmpfs_size_bytes) {
    char path[PATH_MAX], target[PATH_MAX], options[96];
    under(path, root, "/dev");
    tmpfs(path, "size=64k,mode=0755", MS_NOSUID | MS_NOEXEC);
    for (size_t i = 0; i < COUNT(dev_nodes); i++) {
        path_of(target, "/dev/%s", dev_nodes[i]);
        bind(root_fd, target, target, 1, 1);
    }
    for (size_t i = 0; i < COUNT(dev_links); i++) {
        path_of(target, "%s/%s", path, dev_links[i][0]);
        check(symlink(dev_links[i][1], target));
    }
    path_of(target, "%s/shm", path);
    snprintf(options, sizeof options, "size=%llu,mode=1777", tmpfs_size_bytes);
    tmpfs(target, options, MS_NOSUID | MS_NODEV | MS_NOEXEC);
    check(mount(NULL, path, NULL, RO_FLAGS | MS_NOEXEC, NULL));
}

void build_and_pivot(const struct plan *plan) {
    const char *root = plan->mountpoint;
    char path[PATH_MAX], options[128];
    step("rootfs");
    check(mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755"));
    int root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    check(root_fd);
    step("mount system");
    for (size_t i = 0; i < plan->system_bind_count; i++)
        copy_host_path(root, root_fd, plan->system_binds[i], 0);
    step("mount /etc");
    etc(root, root_fd, plan);
    step("mount /proc");
    check(mkdir(under(path, root, "/proc"), 0555));
    check(mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL));
    step("mask /proc");
    mask_proc(path, root_fd);
    step("mount /dev");
    dev(root, root_fd, plan->tmpfs_size_bytes);
    step("mount /tmp");
    snprintf(options, sizeof options, "size=%llu,mode=1777", plan->tmpfs_size_bytes);
    tmpfs(under(path, root, "/tmp"), options, MS_NOSUID | MS_NODEV);
    step("mount work dir");
    if (plan->workdir_source != NULL) {
        bind(root_fd, plan->workdir_source, plan->workdir, 1, 0);
    } else {
        snprintf(options, sizeof options, "size=%llu,mode=0700,uid=%u,gid=%u", plan->tmpfs_size_bytes,
                 (unsigned)plan->uid, (unsigned)plan->gid);
        tmpfs(under(path, root, plan->workdir), options, MS_NOSUID | MS_NODEV);
    }
    for (size_t i = 0; i < plan->bind_count; i++) {
        const struct bind *b = &plan->binds[i];
        step("bind %zu: %s -> %s", i, b->source, b->target);
        bind(root_fd, b->source, b->target, b->writable, 0);
    }
    close(root_fd);
    step("pivot_root");
    check(chdir(root));
    check(syscall(SYS_pivot_root, ".", ".")); /* the old root ends up stacked on "/": detach it */
    check(umount2(".", MNT_DETACH));
    check(chdir("/"));
    step("remount ro");
    check(mount(NULL, "/", NULL, RO_FLAGS, NULL));
}
