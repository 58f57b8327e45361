# mk/torchscript.mk -- TorchScript backend extras (issue 5).
#
#   make bench-torchscript   library vs direct-Python timings of one forward and one VJP for a
#                            small and a mid-size UNet; writes docs/torchscript-bench.md
#   make torchscript-fixtures  regenerate tests/scores/fixtures/ (Debian's python3-torch), the
#                            hostile model files of tests/scores/test_hostile_models.c included

TORCH_PYTHON ?= /usr/bin/python3


.PHONY: bench-torchscript torchscript-fixtures

torchscript-fixtures:
	$(TORCH_PYTHON) tests/scores/make_fixtures.py tests/scores/fixtures
	$(TORCH_PYTHON) tests/scores/make_hostile_fixtures.py tests/scores/fixtures

BENCH_TS_DIR ?= $(BUILD)/bench-torchscript
BENCH_TS_THREADS ?= 1
BENCH_TS_REPEATS ?= 40

bench-torchscript: $(BINOUT)/bench-torchscript $(SHARED)
	@mkdir -p $(BENCH_TS_DIR)
	$(TORCH_PYTHON) scripts/bench_torchscript.py --lib-bench $(BINOUT)/bench-torchscript --lib-so $(LIBOUT)/$(SONAME) \
	    --workdir $(BENCH_TS_DIR) --threads $(BENCH_TS_THREADS) --repeats $(BENCH_TS_REPEATS) \
	    --out docs/torchscript-bench.md
