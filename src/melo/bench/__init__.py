"""Benchmarks: presets, editing protocols, metrics, batched predictions and run reports (``melo bench``).

The data loaders are :mod:`melo.data`; the offline stand-in models are :mod:`melo.standins`.
"""
