# libstsl -- build, test, install.
#
#   make              library (lib/libstsl.so.X.Y.Z, lib/libstsl.a) and tools (bin/)
#   make check        install deps, build, run every CUnit suite
#   make check-asan   the same suites under AddressSanitizer + UBSan
#   make check-kill   interrupted sharded batches lose nothing (long run; make check runs it small)
#   make demo         install deps, build, restore the bundled samples into demo-out/
#   make bench        benchmarks; results written to docs/
#   make install / uninstall   honour PREFIX, DESTDIR, LIBDIR, INCLUDEDIR, PKGCONFIGDIR
#   make WITH_TORCH=0 leaves the TorchScript shim out
#
# Sources are found by directory: src/<layer>/*.c, shim/*.cpp, tests/<layer>/test_*.c,
# examples/*.c (one tool each, sharing examples/common/*.c).

VERSION_MAJOR := $(shell sed -n 's/^\#define STSL_VERSION_MAJOR \([0-9]*\).*/\1/p' include/stsl.h)
VERSION_MINOR := $(shell sed -n 's/^\#define STSL_VERSION_MINOR \([0-9]*\).*/\1/p' include/stsl.h)
VERSION_PATCH := $(shell sed -n 's/^\#define STSL_VERSION_PATCH \([0-9]*\).*/\1/p' include/stsl.h)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

CC ?= cc
CXX ?= c++
BUILD ?= build
LIBOUT ?= lib
BINOUT ?= bin
SAN_FLAGS ?=
OPT ?= -O2

comma := ,

# ---- TorchScript backend: on when libtorch's headers are found ----
# Default: Debian's libtorch (headers in /usr/include, libraries in the multiarch directory).
# TORCH_PREFIX=DIR takes a libtorch laid out as the PyTorch wheel's torch/ folder or the libtorch
# zip: DIR/include (+ include/torch/csrc/api/include), DIR/lib, DIR/share/cmake/Torch.  Then
#   TORCH_CXX11_ABI  0 or 1, the -D_GLIBCXX_USE_CXX11_ABI that libtorch was built with (read from
#                    DIR/share/cmake/Torch/TorchConfig.cmake unless given; wheels before 2.7 use 0)
#   TORCH_CUDA       1 links libtorch_cuda and libc10_cuda (default: 1 when DIR/lib has them)
# TORCH_EXTRA_LIBS is appended to the link line (e.g. -Wl,-rpath-link,DIR for CUDA's libraries).
ifneq ($(TORCH_PREFIX),)
TORCH_INCLUDE ?= $(TORCH_PREFIX)/include
TORCH_LIBDIR ?= $(TORCH_PREFIX)/lib
TORCH_CXX11_ABI ?= $(shell sed -n 's/.*-D_GLIBCXX_USE_CXX11_ABI=\([01]\).*/\1/p' \
                     $(TORCH_PREFIX)/share/cmake/Torch/TorchConfig.cmake 2>/dev/null | head -n 1)
endif
TORCH_INCLUDE ?= /usr/include
TORCH_LIBDIR ?= /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)
ifeq ($(origin WITH_TORCH),undefined)
WITH_TORCH := $(if $(wildcard $(TORCH_INCLUDE)/torch/script.h),1,0)
endif
TORCH_CUDA ?= $(if $(wildcard $(TORCH_LIBDIR)/libtorch_cuda.so),1,0)
# libtorch_cuda registers the CUDA kernels from its static initialisers; nothing references it
# by symbol, so --as-needed (Debian/Ubuntu's default) would drop it without --no-as-needed.
TORCH_CUDA_LIBS := $(if $(filter 1,$(TORCH_CUDA)),-Wl$(comma)--no-as-needed -ltorch_cuda -lc10_cuda -Wl$(comma)--as-needed)
TORCH_LIBS := -L$(TORCH_LIBDIR) -Wl,-rpath,$(TORCH_LIBDIR) $(TORCH_CUDA_LIBS) -ltorch_cpu -lc10 \
              $(TORCH_EXTRA_LIBS)
TORCH_ABI_FLAG := $(if $(TORCH_CXX11_ABI),-D_GLIBCXX_USE_CXX11_ABI=$(TORCH_CXX11_ABI))
# The tools link libstsl.so only; the linker still walks libtorch's dependencies, so they get
# TORCH_EXTRA_LIBS's linker flags too (rpath-link to CUDA's libraries, for instance).
TOOL_TORCH_FLAGS := $(if $(filter 1,$(WITH_TORCH)),$(TORCH_EXTRA_LIBS))

# ---- Other dependencies from a prefix of their own (e.g. unpacked .deb files, see
# scripts/check-cuda.sh): DEPS_PREFIX=DIR adds DIR/usr/include and DIR/usr/lib/<multiarch> (and
# DIR/include, DIR/lib) to the search paths, with an rpath, for libpng, libjpeg, FFTW and CUnit.
ifneq ($(DEPS_PREFIX),)
DEPS_MULTIARCH := $(shell $(CC) -print-multiarch 2>/dev/null)
DEPS_INCDIRS := $(wildcard $(DEPS_PREFIX)/usr/include $(DEPS_PREFIX)/usr/include/$(DEPS_MULTIARCH) $(DEPS_PREFIX)/include)
DEPS_LIBDIRS := $(wildcard $(DEPS_PREFIX)/usr/lib/$(DEPS_MULTIARCH) $(DEPS_PREFIX)/lib/$(DEPS_MULTIARCH) $(DEPS_PREFIX)/usr/lib $(DEPS_PREFIX)/lib)
DEPS_CFLAGS := $(addprefix -isystem ,$(DEPS_INCDIRS))
DEPS_LDFLAGS := $(foreach d,$(DEPS_LIBDIRS),-L$(d) -Wl,-rpath,$(d))
endif

WARN := -Wall -Wextra -Werror
CFLAGS_ALL := -std=c11 $(OPT) -g $(WARN) -fPIC -fvisibility=hidden -D_GNU_SOURCE \
              -Iinclude -Isrc $(DEPS_CFLAGS) $(SAN_FLAGS) $(CFLAGS)
# "-isystem /usr/include" would reorder the system search path and break libstdc++'s
# #include_next <stdlib.h>, so the torch include root is added only when it is elsewhere.
TORCH_ROOT_FLAG := $(if $(filter /usr/include,$(patsubst %/,%,$(TORCH_INCLUDE))),,-isystem $(TORCH_INCLUDE))
# UBSan's vptr check needs the typeinfo of every polymorphic libtorch type the shim touches, and
# libtorch does not export all of them (c10::DynamicType: the ASan/UBSan link fails); the shim's
# other UB checks stay on.
SHIM_NO_VPTR := $(if $(findstring undefined,$(SAN_FLAGS)),-fno-sanitize=vptr)
# The shim is written in C++17; recent libtorch refuses to compile below C++20 (ATen/ATen.h:
# "#error C++20 or later ... is required": PyPI's 2.15 on 2026-12-05; the GPU machine's 2.11
# still built as C++17), so the standard follows the headers.  TORCH_CXX_STD=c++NN overrides.
TORCH_CXX_STD ?= $(if $(shell grep -ls 'C++20 or later compatible compiler is required' \
                   $(TORCH_INCLUDE)/ATen/ATen.h 2>/dev/null),c++20,c++17)
CXXFLAGS_ALL := -std=$(TORCH_CXX_STD) $(OPT) -g $(WARN) -Wno-unused-parameter -fPIC -fvisibility=hidden \
                -fvisibility-inlines-hidden -Iinclude -Isrc $(TORCH_ROOT_FLAG) \
                -isystem $(TORCH_INCLUDE)/torch/csrc/api/include $(TORCH_ABI_FLAG) $(SAN_FLAGS) \
                $(SHIM_NO_VPTR) $(CXXFLAGS)
DEPLIBS := $(DEPS_LDFLAGS) -lpng -ljpeg -lfftw3f -lz -lm -lpthread
ifeq ($(WITH_TORCH),1)
CFLAGS_ALL += -DSTSL_WITH_TORCH=1
CXXFLAGS_ALL += -DSTSL_WITH_TORCH=1
# CUDA graphs (shim/cuda_graphs.cpp, STSL_CUDA_GRAPHS=1) need CUDA's runtime headers at build time
# (c10's stream types include them): the wheel's nvidia/*/include, CUDA_HOME's, /usr/local/cuda's.
# Only libtorch's exported functions are called, so nothing more is linked.  TORCH_CUDA_INCLUDE=DIR
# overrides, TORCH_CUDA_INCLUDE= (empty) builds without them.
ifeq ($(TORCH_CUDA),1)
TORCH_CUDA_INCLUDE ?= $(patsubst %/cuda_runtime_api.h,%,$(firstword $(wildcard \
                      $(if $(TORCH_PREFIX),$(TORCH_PREFIX)/../nvidia/*/include/cuda_runtime_api.h) \
                      $(if $(CUDA_HOME),$(CUDA_HOME)/include/cuda_runtime_api.h) \
                      /usr/local/cuda/include/cuda_runtime_api.h)))
ifneq ($(TORCH_CUDA_INCLUDE),)
CXXFLAGS_ALL += -isystem $(TORCH_CUDA_INCLUDE) -DSTSL_SHIM_CUDA_GRAPHS=1
endif
endif
LINK_LIBS := $(DEPLIBS) $(TORCH_LIBS) -lstdc++
SHIM_SRC := $(wildcard shim/*.cpp)
PC_PRIVATE := -Wl,--exclude-libs,libstsl.a $(if $(filter 1,$(TORCH_CUDA)),-ltorch_cuda -lc10_cuda) \
              -ltorch_cpu -lc10 -lstdc++
else
LINK_LIBS := $(DEPLIBS)
SHIM_SRC :=
PC_PRIVATE :=
endif

# Loops whose trip count is known only at run time (the operators' rows, the solvers' per-step
# arithmetic, the normals' lanes, the fixed-order sums): -O2's "very cheap" vectoriser leaves them
# scalar.  The dynamic cost model lets GCC vectorise them (with an alias check), several times
# faster; results stay the same bits (element-wise IEEE operations; reductions are not reordered
# without -ffast-math).  (GCC spelling; clang vectorises these loops at -O2 already and rejects
# the option.)
VECTORIZE := $(if $(findstring clang,$(CC)),,-ftree-vectorize -fvect-cost-model=dynamic)
# The normals (src/core/rng.c): sqrtf without errno (its argument is never negative there) so that
# the lanes vectorise; no fused multiply-adds, so that a draw is the same bits on every machine.
RNG_CFLAGS := -fno-math-errno -ffp-contract=off

# ---- The flags an object was built with: BUILD/flags.txt ----
# Objects depend on it, and it changes only when the compilers, their flags or the link line do:
# a build configured differently (libtorch found after a first `make` without it, another
# TORCH_PREFIX, CFLAGS=...) recompiles everything instead of linking stale objects (a `make`
# before `make deps` left models/*.o built without STSL_WITH_TORCH, and `make demo` then said
# "built without the TorchScript backend").  Compared at parse time, written by its recipe, so
# `make -n` shows the rebuild without writing anything.
FLAGS_STAMP := $(BUILD)/flags.txt
FLAGS_NOW := $(strip cc $(CC) $(CFLAGS_ALL) vectorize $(VECTORIZE) rng $(RNG_CFLAGS) cxx $(CXX) \
                     $(CXXFLAGS_ALL) link $(LINK_LIBS))

LIB_SRC := $(wildcard src/*/*.c)
LIB_OBJ := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRC)) \
           $(patsubst shim/%.cpp,$(BUILD)/obj/shim/%.o,$(SHIM_SRC))
SONAME := libstsl.so.$(VERSION_MAJOR)
SHARED := $(LIBOUT)/libstsl.so.$(VERSION)
STATIC := $(LIBOUT)/libstsl.a
# A program linking the static library.  --exclude-libs: the shim's object carries weak C++
# instantiations (std:: templates over std::string and c10 types, c10/torch vtables and
# typeinfo) whose visibility -fvisibility=hidden cannot lower; an executable exports every such
# symbol that a library on its link line also uses, and ld.so then binds libtorch's own calls to
# the program's copies, built with our compiler and headers, even in libtorch's global
# destructors: against the PyTorch wheel's libtorch every test program aborted at exit
# (issue 27).  libstsl.so hides them with its version script; programs linking libstsl.a hide
# them with this flag (so does the installed stsl.pc's Libs.private), and tests/abi/
# check_exports.sh (make check-exports) keeps it so.
STATIC_LINK := $(STATIC) -Wl,--exclude-libs,ALL

# The exact-posterior GMM testbed (tests/support/): test and benchmark support, not part of
# libstsl.  It uses the library's internals (allocator, seeded streams), so it is built with -Isrc
# into its own archive, linked by the test programs and stsl-bench together with libstsl.a.
TESTBED_SRC := $(wildcard tests/support/*.c)
TESTBED_LIB := $(BUILD)/libstsl_testbed.a

TEST_SRC := $(sort $(wildcard tests/*/test_*.c))
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_COMMON := $(wildcard tests/common/*.c)

TOOL_SRC := $(wildcard examples/*.c)
TOOL_BIN := $(patsubst examples/%.c,$(BINOUT)/%,$(TOOL_SRC))
# What `make install` puts in BINDIR: the user tools.  The other programs of examples/
# (stsl-bench, bench-operators, bench-torchscript) are benchmark drivers for `make bench`.
USER_TOOLS := stsl-restore stsl-degrade
TOOL_COMMON := $(wildcard examples/common/*.c)

.PHONY: all lib tools deps check check-run check-asan check-abi check-exports check-test-env check-bench-reports check-build-flags check-install demo bench \
        install uninstall clean abi-baseline fuzz

all: lib tools

lib: $(SHARED) $(STATIC)

tools: $(TOOL_BIN)

deps:
	@bash scripts/deps.sh

# BUILD/flags.txt (FLAGS_STAMP above): remade only when it differs from FLAGS_NOW
ifneq ($(strip $(file <$(FLAGS_STAMP))),$(FLAGS_NOW))
$(FLAGS_STAMP): FORCE
endif
$(FLAGS_STAMP):
	@mkdir -p $(dir $@)
	@printf '%s\n' '$(subst ','\'',$(FLAGS_NOW))' > $@

$(BUILD)/obj/%.o: src/%.c include/stsl.h $(wildcard src/*/*.h) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# src/models is the one user of the shim's C interface: shim/shim.h refuses any other includer.
$(BUILD)/obj/models/%.o: CFLAGS_ALL += -DSTSL_SHIM_USER
VECTORIZED_OBJ := $(BUILD)/obj/operators/%.o $(BUILD)/obj/solvers/%.o $(BUILD)/obj/core/rng.o \
                  $(BUILD)/obj/core/vec.o
$(VECTORIZED_OBJ): CFLAGS_ALL += $(VECTORIZE)
$(BUILD)/obj/core/rng.o: CFLAGS_ALL += $(RNG_CFLAGS)


$(BUILD)/obj/shim/%.o: shim/%.cpp $(wildcard shim/*.h) include/stsl.h $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS_ALL) -c $< -o $@

$(SHARED): $(LIB_OBJ) src/libstsl.map
	@mkdir -p $(LIBOUT)
	$(CC) -shared -o $@ $(LIB_OBJ) -Wl,-soname,$(SONAME) -Wl,--version-script=src/libstsl.map \
	    -Wl,--no-undefined -Wl,--exclude-libs,ALL $(SAN_FLAGS) $(LINK_LIBS)
	ln -sf libstsl.so.$(VERSION) $(LIBOUT)/$(SONAME)
	ln -sf $(SONAME) $(LIBOUT)/libstsl.so

$(STATIC): $(LIB_OBJ)
	@mkdir -p $(LIBOUT)
	rm -f $@
	ar rcs $@ $(LIB_OBJ)

$(BUILD)/obj/support/%.o: tests/support/%.c $(wildcard tests/support/*.h) include/stsl.h $(wildcard src/*/*.h) \
                          $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests -c $< -o $@

$(TESTBED_LIB): $(patsubst tests/support/%.c,$(BUILD)/obj/support/%.o,$(TESTBED_SRC))
	rm -f $@
	ar rcs $@ $^

# Tests link the static library so they can also reach internal (hidden) functions.
$(BUILD)/tests/%: tests/%.c $(STATIC) $(TESTBED_LIB) $(TEST_COMMON) $(wildcard tests/common/*.h tests/support/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests -o $@ $< $(TEST_COMMON) $(TESTBED_LIB) $(STATIC_LINK) -lcunit $(LINK_LIBS)

# The tools' tests (tests/tools/) also test the tools' own code (examples/common/*.c) directly,
# built as the tools build it: against include/ and examples/ only.
TOOL_TEST_BIN := $(filter $(BUILD)/tests/tools/%,$(TEST_BIN))
$(TOOL_TEST_BIN): $(BUILD)/tests/tools/%: tests/tools/%.c $(STATIC) $(TEST_COMMON) $(TOOL_COMMON) \
                  $(wildcard tests/common/*.h examples/common/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(TOOL_CFLAGS) -Itests -o $@ $< $(TEST_COMMON) $(TOOL_COMMON) $(STATIC_LINK) -lcunit \
	    $(LINK_LIBS) -lz

# Tools are programs of the public API: they compile against include/ (and examples/common/)
# only, so a tool that includes anything under src/ fails to build, and link the shared
# library, as a user's program would.
TOOL_CFLAGS = $(filter-out -Isrc,$(CFLAGS_ALL)) -Iexamples
$(BINOUT)/%: examples/%.c $(SHARED) $(TOOL_COMMON) $(wildcard examples/common/*.h)
	@mkdir -p $(BINOUT)
	$(CC) $(TOOL_CFLAGS) -o $@ $< $(TOOL_COMMON) -L$(LIBOUT) -lstsl \
	    -Wl,-rpath,'$$ORIGIN/$(shell realpath -m --relative-to=$(BINOUT) $(LIBOUT))' $(DEPS_LDFLAGS) \
	    $(TOOL_TORCH_FLAGS) -lz -lm -lpthread $(SAN_FLAGS)

# The CI test command: unit suites, the programs' exports, ABI and install checks, then the
# hardening passes of mk/hardening.mk (a compile with distributions' hardening flags,
# allocation-failure sweep under ASan, ThreadSanitizer, a short fuzz pass).
CHECK_FUZZ_SECONDS ?= 10
check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory check-run
	@$(MAKE) --no-print-directory check-exports
	@$(MAKE) --no-print-directory check-test-env
	@$(MAKE) --no-print-directory check-bench-reports
	@$(MAKE) --no-print-directory check-build-flags
	@$(MAKE) --no-print-directory check-abi
	@$(MAKE) --no-print-directory check-hardened-build
	@$(MAKE) --no-print-directory check-install
	@$(MAKE) --no-print-directory check-kill KILL_ROUNDS=3 KILL_IMAGES=12 KILL_SHARDS=3
	@$(MAKE) --no-print-directory check-faults
	@$(MAKE) --no-print-directory check-tsan
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS)

check-run: $(TEST_BIN) tools
	@BUILD=$(BUILD) BINOUT=$(BINOUT) WITH_TORCH=$(WITH_TORCH) bash tests/run.sh $(TEST_BIN)

ASAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan LIBOUT=build/asan/lib BINOUT=build/asan/bin \
	    OPT=-O1 SAN_FLAGS="$(ASAN)" check-run

check-abi: $(SHARED)
	@bash tests/abi/check_abi.sh $(SHARED)

# No test program or tool exports a C++ symbol for libtorch to bind to (see STATIC_LINK).
check-exports: $(TEST_BIN) $(TOOL_BIN)
	@bash tests/abi/check_exports.sh $(TEST_BIN) $(TOOL_BIN)

# The test programs find the tools wherever BINOUT puts them and the python that has torch.
check-test-env: $(BUILD)/tests/operators/test_degrade_cli $(BUILD)/tests/exporters/test_exporters tools
	@bash tests/tools/check_test_env.sh $(BUILD) $(BINOUT) $(WITH_TORCH)

# The benchmark scripts rewrite only their block of a docs page (bench_common.replace_block).
check-bench-reports:
	@/usr/bin/python3 tests/tools/check_bench_reports.py

# Objects follow the build's flags (FLAGS_STAMP): a differently configured build recompiles.
check-build-flags: all
	@bash tests/tools/check_build_flags.sh "$(MAKE)" "$(CFLAGS)" "$(BUILD)"

check-install: $(SHARED) $(STATIC)
	@bash tests/install/check_install.sh

# The baseline is taken from a WITH_TORCH=0 build: the exported functions are the same, and the
# dump stays small because libtorch's C++ types are not in its debug information.
abi-baseline: $(SHARED)
	$(MAKE) --no-print-directory WITH_TORCH=0 BUILD=build/notorch LIBOUT=build/notorch/lib \
	    BINOUT=build/notorch/bin build/notorch/lib/libstsl.so.$(VERSION)
	abidw --no-corpus-path --no-show-locs --headers-dir include build/notorch/lib/libstsl.so.$(VERSION) \
	    > tests/abi/libstsl.abi
	nm -D --defined-only $(SHARED) | awk '$$2 ~ /[TDBRWV]/ {print $$3}' | sort -u > tests/abi/symbols.txt

# Generated at every install so that PREFIX/LIBDIR of that install are the ones recorded.
$(BUILD)/stsl.pc: pkgconfig/stsl.pc.in include/stsl.h FORCE
	@mkdir -p $(BUILD)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@DATADIR@|$(DATADIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@PRIVATE@|$(PC_PRIVATE)|' $< > $@

FORCE:

install: $(SHARED) $(STATIC) $(addprefix $(BINOUT)/,$(USER_TOOLS)) $(BUILD)/stsl.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR)
	install -m 644 include/stsl.h $(DESTDIR)$(INCLUDEDIR)/stsl.h
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf libstsl.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libstsl.so
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(BUILD)/stsl.pc $(DESTDIR)$(PKGCONFIGDIR)/stsl.pc
	for t in $(USER_TOOLS); do install -m 755 $(BINOUT)/$$t $(DESTDIR)$(BINDIR)/; done

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/stsl.h $(DESTDIR)$(LIBDIR)/libstsl.so.$(VERSION) \
	      $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libstsl.so $(DESTDIR)$(LIBDIR)/libstsl.a \
	      $(DESTDIR)$(PKGCONFIGDIR)/stsl.pc
	# every program of examples/: an install before issue 29 put the benchmark drivers there too
	for t in $(notdir $(TOOL_BIN)); do rm -f $(DESTDIR)$(BINDIR)/$$t; done

clean:
	rm -rf build lib bin demo-out

-include mk/*.mk
