"""The daemon: start-up and stop, config and reload, the tool registry, the gRPC servicer, intake and
admission, execution streams, the audit trail's vocabulary, metrics, systemd notify and logs. The only layer
that joins the policy, the audit log and the engine."""
