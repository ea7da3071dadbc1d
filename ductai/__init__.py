"""ductai: deep learning for galactography."""

__version__ = "0.1.0"
