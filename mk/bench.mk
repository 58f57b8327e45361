# mk/bench.mk -- make bench (issue 8): every benchmark, results written to docs/.
#
#   make bench              the operator, TorchScript and GMM benchmarks (when their targets
#                           exist), then bench-images
#   make bench-images       tasks x solvers on the Fashion-MNIST test list -> docs/benchmarks.md,
#                           docs/bench/*.png; resumable (results kept in $(BENCH_DIR))
#   make bench-plan         cost first: time every configuration at 1/50 of its steps and print
#                           the projected duration of bench-images (a few minutes)
#   make bench-batch        stsl-restore's batch mode: images per second against --batch and
#                           --threads, one solver of each kind -> docs/scaling.md (about 10 min)
#
# Knobs: BENCH_N (images per configuration, default 20), BENCH_TASKS, BENCH_CONFIGS (labels, see
# scripts/bench_run.sh), BENCH_STEP_DIV (divide every step count: a smoke test, not the papers'
# settings), BENCH_THREADS (per process, default 1), BENCH_JOBS (processes side by
# side, default 1; 2 on an idle 2-core machine), BENCH_BATCH, BENCH_DIR, BENCH_REPORT.
# Cost: `make bench-plan` projects the full run for this machine.  Measured on the 2-core
# development VM (N=20, 6 tasks x 15 configurations, BENCH_JOBS=2): 71 min on 2026-11-23 (mostly
# with 2 jobs), 44 min on 2026-12-01 (an idle AMD EPYC VM); bench-images alone, not the
# operator/TorchScript/GMM/batch parts.
# Smoke test of the whole pipeline in a few minutes:
#   make bench-images BENCH_N=2 BENCH_STEP_DIV=50 BENCH_DIR=build/bench-smoke \
#        BENCH_REPORT=build/bench-smoke/benchmarks.md

BENCH_N ?= 20
BENCH_DIR ?= $(BUILD)/bench
BENCH_STEP_DIV ?= 1
BENCH_THREADS ?= 1
BENCH_JOBS ?= 1
BENCH_BATCH ?= 20
BENCH_REPORT ?= docs/benchmarks.md
BENCH_TASKS ?= gaussian-blur motion-blur sr4 random-inpaint box-inpaint salt-pepper
BENCH_CONFIGS ?=

.PHONY: bench-images bench-plan bench-batch

BATCH_BENCH_ARGS ?=
bench-batch: tools
	@/usr/bin/python3 scripts/batch_bench.py --bin $(BINOUT)/stsl-restore $(BATCH_BENCH_ARGS)

BENCH_ENV = BINOUT=$(BINOUT) BENCH_N=$(BENCH_N) BENCH_DIR=$(BENCH_DIR) BENCH_STEP_DIV=$(BENCH_STEP_DIV) \
            BENCH_THREADS=$(BENCH_THREADS) BENCH_JOBS=$(BENCH_JOBS) BENCH_BATCH=$(BENCH_BATCH) BENCH_REPORT=$(BENCH_REPORT) \
            BENCH_TASKS="$(BENCH_TASKS)" BENCH_CONFIGS="$(BENCH_CONFIGS)"

# The other benchmarks, when their makefiles exist (operators.mk and solvers.mk also hook theirs
# onto `bench`; make runs each once).  Run `make bench` without -j: parallel benchmarks would
# distort each other's timings.
BENCH_PARTS := $(if $(wildcard mk/operators.mk),bench-operators) \
               $(if $(wildcard mk/torchscript.mk),bench-torchscript) \
               $(if $(wildcard mk/solvers.mk),bench-gmm) bench-batch

# the report's plots need python3-matplotlib: deps installs it for this target (and only this one)
bench: export STSL_DEPS_EXTRA := bench
bench: deps $(BENCH_PARTS)
	@echo "== make bench-images"
	@$(MAKE) --no-print-directory bench-images

bench-images: tools
	@$(BENCH_ENV) bash scripts/bench_run.sh

bench-plan: tools
	@$(BENCH_ENV) BENCH_PLAN=1 bash scripts/bench_run.sh
