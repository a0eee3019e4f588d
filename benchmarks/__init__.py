"""Benchmarks of vscjax (throughput, memory) against a PyTorch reference."""
