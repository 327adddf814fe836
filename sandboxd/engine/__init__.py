"""One execution in a sandbox, usable without the daemon.

``spec`` (what to run) → ``executor`` (the lifecycle order) → ``spawnclient``/``spawner`` (the fork server and its
wire protocol) → ``child/`` (the waiter and the handler-to-be: namespaces, root, credentials, seccomp, execve) →
``verdict``/``result`` (what happened). ``cgroups/`` drives the kernel's accounting and limits; ``seccomp/``
compiles OCI/Docker profiles to BPF. Imports nothing from the policy, audit, server, API or CLI.
"""
