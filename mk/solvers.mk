# Solvers (issue 6): the exact-posterior GMM benchmark.
#
# stsl-bench uses the library-internal exact-posterior testbed (src/solvers/testbed.c, hidden
# symbols), so unlike the other tools it sees src/ and links the static library: the one
# exception to the tools' public-API rule, TESTBED_EXCEPTION_CFLAGS in the Makefile.
#
#   make bench-gmm      reduced-but-meaningful GMM benchmark -> docs/benchmarks-gmm.md
#   BENCH_GMM_ARGS=...  override its arguments

# Rows: every solver at its defaults, plus the literal readings that issue 14 kept selectable
# (stsl / stsl-biased with Adam and no line-14 noise; rmp's Tweedie likelihood variance; dps-mo
# re-noising to the next level), so the table shows what each default choice changed.
BENCH_GMM_ARGS ?= --prior gmm --dx 8,80,800 --dy 1,2,4 --seeds 2 --n 200 --quiet \
    --solvers ddim,dps,ldps,psld,stsl,stsl:rule=0:stepnoise=0,stsl-biased,stsl-biased:rule=0:stepnoise=0,rmp,rmp:likvar=1,dps-mo,dps-mo:renoise=1

# The image mode (--task, examples/common/bench_images.c) comes with $(TOOL_COMMON); it reads
# the gzip'd data set with zlib.
$(BINOUT)/stsl-bench: examples/stsl-bench.c $(STATIC) $(TOOL_COMMON) $(wildcard examples/common/*.h)
	@mkdir -p $(BINOUT)
	$(CC) $(TOOL_CFLAGS) $(TESTBED_EXCEPTION_CFLAGS) -o $@ $< $(TOOL_COMMON) $(STATIC_LINK) $(LINK_LIBS) \
	    -lz $(SAN_FLAGS)

.PHONY: bench-gmm
bench-gmm: $(BINOUT)/stsl-bench
	$(BINOUT)/stsl-bench $(BENCH_GMM_ARGS) --markdown docs/benchmarks-gmm.md

bench: bench-gmm
