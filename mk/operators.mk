# Operators (issue 4): the operator benchmark.
#
#   make bench-operators            forward/adjoint timings at 256 and 512 px -> docs/operators-bench.md
#   BENCH_OPERATORS_ARGS=...        override its arguments (e.g. --repeats 5 --sizes 256)

BENCH_OPERATORS_ARGS ?= --sizes 256,512 --repeats 15 --threads 1

.PHONY: bench-operators
bench-operators: $(BINOUT)/bench-operators
	$(BINOUT)/bench-operators $(BENCH_OPERATORS_ARGS) \
	    --machine "$$(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $$(nproc) cores" \
	    --markdown docs/operators-bench.md
	@cat docs/operators-bench.md

bench: bench-operators


# The operators' C code against the same maps as libtorch ops (issue 27 item 2): per operator,
# forward and adjoint/VJP times of both paths and their largest difference, on the CPU or a GPU
# (BENCH_DEVICE_OPS_ARGS="--device cuda").  Not part of make check or make bench; built like
# the test programs (it reaches the internal switch stsl__operator_use_device).
BENCH_DEVICE_OPS_ARGS ?= --device cpu --size 256 --batch 1 --repeats 10
.PHONY: bench-device-ops
$(BUILD)/bench_device_ops: scripts/bench_device_ops.c $(STATIC) include/stsl.h $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(STATIC_LINK) $(LINK_LIBS)

bench-device-ops: $(BUILD)/bench_device_ops
	$(BUILD)/bench_device_ops $(BENCH_DEVICE_OPS_ARGS)
