"""Benchmarks: eventador vs the peer (eventsourcing + SQLite). Run: python benchmarks/run.py"""
