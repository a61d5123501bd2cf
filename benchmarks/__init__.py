"""Benchmarks: throughput against the quota, memory on a large backlog, database write rate.

Kept importable with the standard library alone, so a row can run under another interpreter
(LangChain's row runs in its own virtual environment; see README.md).
"""
