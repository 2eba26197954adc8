"""Datasets: the procedural default, ImageFolder directories and ImageNet val (folder layout)."""
