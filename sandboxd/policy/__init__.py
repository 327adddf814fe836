"""Who calls and what they may do: callers identified (Unix socket peer, static tokens, JWT, mTLS), roles and
grants, limit ceilings, payload bounds and rates, decided once per request. Imports nothing from the engine or
the server."""
