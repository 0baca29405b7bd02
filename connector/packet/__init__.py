"""The packet path's logic: routing, expiry and amount rules, and the worker loop.

Nothing here opens a socket or a file: workers read ingress records from a ring and
write egress records to rings; the ledger and telemetry are reached through emitters."""
