"""The child side of one execution: what the daemon sends for it (``plan``, ``launch``) and the native programs
that run it (``helpers``, and their sources in ``native/``: one file per kernel concern, as nsjail keeps them —
``waiter.c`` the namespaces, the cgroup and the trace; ``sandbox.c`` pid 1 and the handler-to-be's steps in
order; ``rootfs.c`` the fresh root; ``plan.c`` the plan on the wire; ``init.c``, ``exec.c``, ``watch.c`` the
programs the sandbox's processes become).
"""
