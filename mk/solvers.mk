# Solvers (issue 6): the exact-posterior GMM benchmark.
#
# stsl-bench's GMM mode uses the exact-posterior testbed (tests/support/testbed.h, whose header
# needs only the public one): it compiles as every tool does, without src/, and links the
# testbed's archive, which needs libstsl.a's internals, so it links the static library.
#
#   make bench-gmm      reduced-but-meaningful GMM benchmark -> docs/benchmarks-gmm.md
#   BENCH_GMM_ARGS=...  override its arguments

# Every instance of the grid (d_x 8, 80, 800 x d_y 1, 2, 4 x 2 seeds) and 12 instances drawn at
# random (d_x 10..40, d_y 1..15, stream 28), every solver at the library's defaults; the report
# gives each claim as "k of n instances" beside the exact-vs-exact floor (issue 28).
BENCH_GMM_ARGS ?= --prior gmm --dx 8,80,800 --dy 1,2,4 --seeds 2 --random 12:28 --n 200 --quiet \
    --solvers ddim,dps,stsl,dps-mo,rmp

# The image mode (--task, examples/common/bench_images.c) comes with $(TOOL_COMMON); it reads
# the gzip'd data set with zlib.
$(BINOUT)/stsl-bench: examples/stsl-bench.c $(STATIC) $(TESTBED_LIB) $(TOOL_COMMON) $(wildcard examples/common/*.h tests/support/*.h)
	@mkdir -p $(BINOUT)
	$(CC) $(TOOL_CFLAGS) -Itests -o $@ $< $(TOOL_COMMON) $(TESTBED_LIB) $(STATIC_LINK) $(LINK_LIBS) \
	    -lz $(SAN_FLAGS)

.PHONY: bench-gmm
bench-gmm: $(BINOUT)/stsl-bench
	$(BINOUT)/stsl-bench $(BENCH_GMM_ARGS) --markdown docs/benchmarks-gmm.md

bench: bench-gmm

# A solver step outside the network (issue 27 item 2): every solver on a prior whose network
# costs nothing, the time per step left to the solver's arithmetic, its noise and the operator
# (scripts/bench_solver_host.c).  Not part of make check or make bench; check-cuda runs it on the
# GPU (BENCH_SOLVER_HOST_ARGS="--device cuda").  Public API only, linked like the tools.
BENCH_SOLVER_HOST_ARGS ?= --device cpu --size 256 --repeats 5
.PHONY: bench-solver-host
$(BUILD)/bench_solver_host: scripts/bench_solver_host.c $(STATIC) include/stsl.h
	@mkdir -p $(dir $@)
	$(CC) $(TOOL_CFLAGS) -o $@ $< $(STATIC_LINK) $(LINK_LIBS)

bench-solver-host: $(BUILD)/bench_solver_host
	$(BUILD)/bench_solver_host $(BENCH_SOLVER_HOST_ARGS)
