# `make bench`: serving latency/throughput (stock vs ours vs in-process floor), time to first prediction and
# model quality, side by side in one run; writes bench/results/{latest.json,report.md,bench.png}.
BENCH_ARGS ?=

bench: venv ## benchmarks → bench/results/ (report.md, latest.json, bench.png); ~10 min
	$(BIN)/python bench/run.py $(BENCH_ARGS)
