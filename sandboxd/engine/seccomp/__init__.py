"""Seccomp: OCI/Docker JSON profiles parsed strictly (``parse``), compiled once to BPF and cached by digest
(``profile``), installed in the child as its last step before ``execve`` (``install``); syscall names per ABI
(``names``)."""
