"""The child side of one execution: what the daemon sends for it (``plan``, ``launch``) and the native program
that runs it (``program``: ``sandboxd-spawn``, built from ``native/``, one file per kernel concern, as nsjail
keeps them — ``spawner.c`` the fork server; ``waiter.c`` the namespaces, the cgroup and the trace;
``sandbox.c`` pid 1 and the handler-to-be's steps in order; ``rootfs.c`` the fresh root; ``init.c`` the init;
``launch.c`` the handler's last steps; ``watch.c`` the watch; ``cgroup.c`` the cgroup a sandbox alone in it gets
made by its waiter; ``plan.c`` the plan on the wire).
"""
