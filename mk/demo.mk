# mk/demo.mk -- make demo, and installing the bundled models (issue 8).
#
#   make demo                 deps, build, then restore data/samples/*.png in six runs (five tasks,
#                             four solvers: scripts/demo.sh) with the bundled models; montages under
#                             demo-out/ (a few minutes on 2 cores)
#   make demo DEMO_FULL=1     the same at the papers' step counts (slow)
#   make install-models       models/*.pt and data/bench_indices.txt into
#                             $(DATADIR)/stsl/{models,data}, where the tools look for them
#                             (<bin>/../share/stsl/models); also run by `make install`

DEMO_OUT ?= demo-out
DEMO_THREADS ?= 1
DEMO_FULL ?= 0
DATADIR ?= $(PREFIX)/share

.PHONY: install-models uninstall-models

demo: deps
	@$(MAKE) --no-print-directory all
	@BINOUT=$(BINOUT) DEMO_OUT=$(DEMO_OUT) DEMO_THREADS=$(DEMO_THREADS) DEMO_FULL=$(DEMO_FULL) \
	    bash scripts/demo.sh

# Models are optional at install time (they are large and trained separately): copied when present.
install-models:
	@if ls models/*.pt >/dev/null 2>&1; then \
	    install -d $(DESTDIR)$(DATADIR)/stsl/models $(DESTDIR)$(DATADIR)/stsl/data && \
	    install -m 644 models/*.pt $(DESTDIR)$(DATADIR)/stsl/models/ && \
	    install -m 644 data/bench_indices.txt $(DESTDIR)$(DATADIR)/stsl/data/ ; \
	else echo "install-models: no models/*.pt to install (train them: scripts/train)"; fi

uninstall-models:
	rm -rf $(DESTDIR)$(DATADIR)/stsl/models $(DESTDIR)$(DATADIR)/stsl/data

install: install-models
uninstall: uninstall-models
