"""Layers, init schemes, losses and the MLP, in NumPy."""
