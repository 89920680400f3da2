"""Analysis of stored results: comparisons, statistics, repro window and regressions."""
