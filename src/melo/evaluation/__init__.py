"""Evaluation shared by the benchmarks, the demo and the stand-ins: batched predictions (``predict``),
answer and perplexity metrics (``metrics``), output folders and figures (``outputs``)."""
