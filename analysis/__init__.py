"""Data, zero-shot evaluation, experiments, reports and the ``lraee`` command line.

Importing this package does not import torch (the torch-free ground floor is :mod:`common`).
"""
