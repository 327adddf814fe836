"""``sandboxctl`` and the typed Python client it is built on; reaches the daemon only through the client and
the API package."""
