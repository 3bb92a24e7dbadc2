"""anycastedge: anycast DNS + BGP edge toolkit."""

__version__ = "0.1.0"
