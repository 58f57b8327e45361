# Hardening targets (issue 9): fuzzing, allocation-failure injection, valgrind, ThreadSanitizer.
# Each builds the library into its own directory under build/ so the variants never mix.

FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))

.PHONY: fuzz fuzz-long fuzz-build check-faults check-valgrind check-tsan check-kill check-hardened-build

# Distributions' hardening defaults (issue 27): Ubuntu's gcc turns on _FORTIFY_SOURCE, and with
# it glibc's warn_unused_result attributes, which -Werror makes fatal; Debian's gcc does not, so
# only a build with these flags sees such errors.  Everything is compiled once with them, in its
# own folder: library, shim (with libstdc++'s assertions), tools, test programs, and the sources
# linked elsewhere (fuzz targets, the fault sweep, scripts/cuda_probe.c and bench_device_ops.c) as
# objects.  About a minute on 2 cores; `make check` runs it.
HARDENED_FLAGS := -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3 -fstack-protector-strong \
                  -fstack-clash-protection -Wformat -Wformat-security \
                  $(if $(filter x86_64 i%86,$(shell uname -m)),-fcf-protection)
HARDENED_CXXFLAGS := $(HARDENED_FLAGS) -D_GLIBCXX_ASSERTIONS
HARDENED_EXTRA_SRC := $(wildcard tests/fuzz/fuzz_*.c tests/faults/sweep.c scripts/cuda_probe.c scripts/bench_device_ops.c)
check-hardened-build:
	@$(MAKE) --no-print-directory BUILD=build/hardened LIBOUT=build/hardened/lib \
	    BINOUT=build/hardened/bin CFLAGS="$(HARDENED_FLAGS)" CXXFLAGS="$(HARDENED_CXXFLAGS)" \
	    all $(patsubst tests/%.c,build/hardened/tests/%,$(TEST_SRC))
	@mkdir -p build/hardened/extra
	@for f in $(HARDENED_EXTRA_SRC); do \
	    case $$f in tests/faults/*) d=-DSTSL_FAULT_INJECTION ;; *) d= ;; esac; \
	    $(CC) -std=c11 -O2 $(WARN) -D_GNU_SOURCE $$d -Iinclude -Isrc -Iexamples -Itests $(DEPS_CFLAGS) \
	        $(HARDENED_FLAGS) -c $$f -o build/hardened/extra/$$(basename $$f .c).o || exit 1; \
	done
	@echo "hardened build: clean with $(strip $(HARDENED_FLAGS)) (C++: -D_GLIBCXX_ASSERTIONS)"

# Interrupted batches (issue 17): sharded stsl-restore processes over one output directory,
# SIGKILLed at random moments and inside image saves and results.csv appends, then resumed;
# every input must end with exactly one valid output and one complete results.csv row.
# `make check` runs it small; `make check-kill` is the long run recorded in docs/reliability.md.
KILL_ROUNDS ?= 30
KILL_IMAGES ?= 60
KILL_SHARDS ?= 4
KILL_SEED ?= 17
check-kill: $(BINOUT)/stsl-restore
	@STSL_RESTORE_BIN=$(BINOUT)/stsl-restore bash tests/tools/kill_batch.sh $(KILL_ROUNDS) $(KILL_IMAGES) \
	    $(KILL_SHARDS) $(KILL_SEED)

# libFuzzer needs clang and coverage inside the library: build it with clang, without torch.
# The numeric kernels (src/operators, src/solvers) keep edge coverage but not comparison tracing:
# tracing every loop bound of a convolution spent 60% of fuzz_operator's time (perf, issue 17),
# and those loops compare sizes, not input bytes.  Parsers (io, meta, tools) keep it all.
FUZZ_NUMERIC_CFLAGS := -fno-sanitize-coverage=trace-cmp
build/fuzz/obj/operators/%.o build/fuzz/obj/solvers/%.o: CFLAGS_ALL += $(FUZZ_NUMERIC)
fuzz-build:
	@$(MAKE) --no-print-directory CC=$(FUZZ_CC) WITH_TORCH=0 BUILD=build/fuzz LIBOUT=build/fuzz/lib \
	    BINOUT=build/fuzz/bin OPT=-O1 SAN_FLAGS="$(FUZZ_SAN)" FUZZ_NUMERIC="$(FUZZ_NUMERIC_CFLAGS)" \
	    build/fuzz/lib/libstsl.a
	@mkdir -p build/fuzz/targets
	@for t in $(FUZZ_TARGETS); do \
	    $(FUZZ_CC) -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -Iexamples \
	        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	        tests/fuzz/$$t.c $(if $(wildcard tests/fuzz/fuzz_cli.c),$(TOOL_COMMON)) \
	        build/fuzz/lib/libstsl.a -lpng -ljpeg -lfftw3f -lz -lm -lpthread \
	        -o build/fuzz/targets/$$t || exit 1; \
	done

fuzz: fuzz-build
	@bash tests/fuzz/run_fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The long campaign on record (docs/reliability.md): a fixed budget per target, sized to reach
# 10^7 executions (10^6 for the operator target) on a quiet 2-core machine.  The CLI target, the
# slowest, runs in a second process beside the others: about 24 minutes in all.  The summary
# (target, executions, seconds, executions/s) goes to build/fuzz/long-summary.txt.
# FUZZ_LONG="SECS name=SECS,..." and FUZZ_LONG_CLI=SECS change the budgets.
FUZZ_LONG ?= 240 jpeg=600,operator=360
FUZZ_LONG_CLI ?= 1300
fuzz-long: fuzz-build
	@rm -f build/fuzz/long-summary.txt build/fuzz/long-cli.txt
	@echo "fuzz-long: $$(date -u '+%Y-%m-%d %H:%M UTC'), $$(nproc) cores, load $$(cut -d' ' -f1-3 /proc/loadavg)"
	@FUZZ_SUMMARY=build/fuzz/long-cli.txt bash tests/fuzz/run_fuzz.sh "$(FUZZ_LONG_CLI)" \
	    $(filter fuzz_cli,$(FUZZ_TARGETS)) & cli=$$!; \
	 FUZZ_SUMMARY=build/fuzz/long-summary.txt bash tests/fuzz/run_fuzz.sh "$(FUZZ_LONG)" \
	    $(filter-out fuzz_cli,$(FUZZ_TARGETS)); rc=$$?; \
	 wait $$cli || rc=1; cat build/fuzz/long-cli.txt >> build/fuzz/long-summary.txt 2>/dev/null; \
	 echo "fuzz-long: load after $$(cut -d' ' -f1-3 /proc/loadavg)"; cat build/fuzz/long-summary.txt; \
	 exit $$rc

# Allocation-failure sweep: the library built with -DSTSL_FAULT_INJECTION and ASan (LeakSanitizer
# finds leaks on the failure paths); the sweep program fails allocation n = 1, 2, ... of every
# main path until the path completes without reaching an injected failure.
check-faults:
	@$(MAKE) --no-print-directory WITH_TORCH=0 BUILD=build/faults LIBOUT=build/faults/lib \
	    BINOUT=build/faults/bin OPT=-O1 CFLAGS=-DSTSL_FAULT_INJECTION SAN_FLAGS="$(ASAN)" \
	    build/faults/lib/libstsl.a
	$(CC) -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -Itests $(ASAN) -DSTSL_FAULT_INJECTION \
	    tests/faults/sweep.c tests/common/testutil.c build/faults/lib/libstsl.a -lcunit \
	    -lpng -ljpeg -lfftw3f -lm -lpthread -o build/faults/sweep
	STSL_TEST_DIR=tests build/faults/sweep

check-valgrind: $(TEST_BIN) tools
	@STSL_VALGRIND=1 BUILD=$(BUILD) BINOUT=$(BINOUT) bash tests/run.sh $(TEST_BIN)

check-tsan:
	@$(MAKE) --no-print-directory WITH_TORCH=0 BUILD=build/tsan LIBOUT=build/tsan/lib \
	    BINOUT=build/tsan/bin OPT=-O1 SAN_FLAGS="-fsanitize=thread" build/tsan/lib/libstsl.a
	$(CC) -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc -Itests -fsanitize=thread \
	    tests/threads/test_threads.c tests/common/testutil.c build/tsan/lib/libstsl.a -lcunit \
	    -lpng -ljpeg -lfftw3f -lm -lpthread -o build/tsan/threads
	STSL_TEST_DIR=tests TSAN_OPTIONS=halt_on_error=1 build/tsan/threads
