"""The whole system under load and faults, and the benchmarks' own checks."""
