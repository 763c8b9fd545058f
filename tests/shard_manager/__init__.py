"""Operator tools and the local cluster."""
