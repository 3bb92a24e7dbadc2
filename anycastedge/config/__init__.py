"""Configuration: a YAML loader that remembers file:line, and the pop.yaml model."""

from anycastedge.config.pop import DEFAULT_CONFIG_PATHS, PopConfig, load_pop
from anycastedge.config.source import MarkedDict, load_yaml

__all__ = ["DEFAULT_CONFIG_PATHS", "MarkedDict", "PopConfig", "load_pop", "load_yaml"]
