"""Maskbench: compare masked-modelling self-supervised strategies on equal terms."""

__version__ = "0.1.0"
