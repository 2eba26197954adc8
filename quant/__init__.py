"""INT8 CLIP vision encoder: loading, geometry, tapped forward (and, later, quantization recipes).

Importing this package does not import torch; ``quant.geometry`` stays torch-free.
"""
