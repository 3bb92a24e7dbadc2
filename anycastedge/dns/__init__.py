"""Authoritative DNS: zone model, answer engine, wire fast path, Twisted protocols."""
