"""Systolic-array simulator that replays per-sample exit traces (torch-free)."""
