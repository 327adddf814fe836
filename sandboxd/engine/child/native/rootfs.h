/* The sandbox's root (rootfs.c). */
#ifndef SANDBOXD_ROOTFS_H
#define SANDBOXD_ROOTFS_H

#include "plan.h"

/* Mount the sandbox's root on plan->mountpoint, populate it, pivot into it, make it read-only. Binds are
 * mounted in the plan's order (parents before children: the daemon sorts them); the stage of bind i is
 * "bind i: SOURCE -> TARGET". Any failure is reported as its stage's (steps.h). */
void build_and_pivot(const struct plan *plan);

#endif
