"""The forwarding tier: listeners that carry traffic from the POP to backends' endpoints.

Pure cores (no I/O): the model, the balancers, PROXY protocol headers, endpoint bookkeeping
(health, passive ejection, slow start). Twisted protocols move the bytes.
"""
