"""Benchmarks run only via `make bench` (never in `make test`); results go to
bench/results/ and are summarised into docs/performance.md by bench.report."""
