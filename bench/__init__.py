"""Benchmarks: each command writes JSON to bench/results/ named after the device."""
