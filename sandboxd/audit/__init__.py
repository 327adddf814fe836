"""The tamper-evident, durable audit log.

============  ========================================================================================
record        one record: its JSON line, its hash chained to the record before
writer        :class:`AuditLog`: append from any thread, group commit, rotation, retention, recovery
hub           live subscribers, each with a bounded queue; a slow one is dropped, never waited for
reader        files in chain order; records forwards (``since``) and backwards (``last``); filters
verify        the offline check of a chain of files (``sandboxctl audit verify``)
config        the ``[audit]`` table and the HMAC key file
============  ========================================================================================

Events the log writes itself: ``audit.repaired`` (a torn tail was cut at open), ``audit.expired`` (a rotated
file was deleted by retention), ``audit.subscriber_dropped`` (a live subscriber fell behind).
"""
