"""One execution in a sandbox, usable without the daemon.

``spec`` (what to run) → ``plan`` (its mounts, /etc and limits) → ``executor`` (the lifecycle order) →
``spawnclient``/``spawner`` (the process server and its wire protocol) → ``child/`` (the plan on the wire and the
native waiter: namespaces, root, credentials, seccomp, execve) →
``verdict``/``result`` (what happened). ``cgroups/`` drives the kernel's accounting and limits; ``seccomp/``
compiles OCI/Docker profiles to BPF. Imports nothing from the policy, audit, server, API or CLI.
"""
