"""The allowlisting egress proxy: the only way out of a sandbox's network namespace, decided, limited and
recorded per connection. Knows nothing of gRPC, the engine or the audit log: the server wires it."""
