"""Data, zero-shot evaluation, experiments, reports and the ``lraee`` command line.

Importing this package does not import torch (torch-free packages use ``analysis.errors``
and ``analysis.atomic``).
"""
