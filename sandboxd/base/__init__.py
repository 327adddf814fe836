"""The vocabulary every layer shares and nothing else: the error hierarchy with its machine reasons and the
refusals, resource limits, units (sizes, durations, percentages) and typed TOML reading. Imports nothing of
sandboxd above it."""
