"""Health: the rise/fall state machine (pure) and the probes that feed it."""
