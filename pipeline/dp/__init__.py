"""Differentially private training: per-layer gradient norms, clipped steps, sampling, accounting.

The protection that uses these modules is pipeline/protections/dp.py.
"""
