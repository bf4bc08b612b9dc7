"""nnrun: an experiment runner for the setup choices of a neural network."""

__version__ = "0.1.0"
