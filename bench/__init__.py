"""Benchmarks of chatwoot-bridge (``make bench``): loopback only, bounded in time."""
