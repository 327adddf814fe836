"""The child side of one execution: code that runs only in processes the spawner forked.

One module per kernel concern, as nsjail keeps them: ``waiter`` (reaping, the ptrace exit stop), ``sequence``
(the handler-to-be's steps in order), ``rootfs`` (the fresh root), ``net`` (loopback), ``creds`` (rlimits,
bounding set, ids, capabilities), ``fds`` (stdio and closing the rest), ``syscalls`` (ctypes for what CPython
lacks) and ``plan`` (what the daemon sends, on the wire).
"""
