/* The two privilege drops the handler-to-be (sandbox.c) and the init (init.c) both make: each returns 0, or -1
 * with errno set. */
#ifndef SANDBOXD_PRIVILEGES_H
#define SANDBOXD_PRIVILEGES_H

#include <errno.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Every capability out of the bounding set, up to the kernel's last (EINVAL past it). */
static inline int drop_bounding_set(void) {
    for (unsigned long cap = 0;; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
            continue;
        return errno == EINVAL && cap > 0 ? 0 : -1;
    }
}

/* The effective, permitted, inheritable and ambient sets emptied. */
static inline int clear_capabilities(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0)
        return -1;
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

#endif
