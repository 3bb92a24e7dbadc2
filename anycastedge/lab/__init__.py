"""The anycast lab: a router, POPs, clients and backends in network namespaces (docs/lab.md)."""
