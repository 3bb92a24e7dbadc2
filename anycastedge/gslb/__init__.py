"""GSLB: octoDNS dynamic records, client location and answer selection (pure, no I/O)."""
