"""Benchmarks: data loaders, offline stand-in models, editing protocols, metrics and reports."""
