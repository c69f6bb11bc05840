# Two commands do everything on a fresh Debian machine, as root:
#   make demo   - build the venv, start a switch with two namespace guests and an "internet":
#                 DHCP, DNS, NAT and a forward, shown with the switch's own tables
#   make test   - install the test peers (Debian packages, and udhcpc6 built from Debian's busybox
#                 source) and run the whole suite (CI runs this)

VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DEBS := iproute2 iputils-ping udhcpc curl tcpdump
DEBS := $(DEMO_DEBS) tcpdump iperf3 socat procps kmod \
        qemu-system-x86 linux-image-amd64 busybox-static \
        isc-dhcp-client dhcpcd-base dnsutils dnsmasq-base kea-admin dnsperf nftables ethtool tshark ndisc6 \
        gcc libc6-dev make bzip2
BENCH_DEBS := $(DEBS) slirp4netns

.PHONY: demo test venv debs peers bench lint clean fuzz soak

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

debs:
	@missing=$$(for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing; \
	fi

PKGS ?= $(DEBS)

demo: venv
	@$(MAKE) --no-print-directory debs PKGS="$(DEMO_DEBS)"
	$(VENV)/bin/vswitch demo

# test peers built from source: busybox udhcpc6 (Debian's busybox has none), into $(VENV)/bin:
# udhcpc6 for the namespace tests, udhcpc6-static for the qemu guest's initramfs
peers: venv debs
	bash tests/peers/build_udhcpc6.sh $(VENV)/bin

test: venv debs peers
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -ra

bench: venv
	@$(MAKE) --no-print-directory debs PKGS="$(BENCH_DEBS)"
	$(PY) -m bench.bridge
	$(PY) -m bench.services
	$(PY) -m bench.nat
	$(PY) -m bench.egress
	$(PY) -m bench.ipv6
	$(PY) -m bench.offloads
	$(PY) -m bench.cold

# the soak (tests/lab/test_soak.py) for 10 minutes; `make test` runs it for SOAK_SECONDS=45
soak: venv debs
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(VENV)/bin/pytest -ra -s -m soak tests/lab/test_soak.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Coverage-guided fuzzing (tests/fuzz/README.md): each atheris harness for FUZZ_SECONDS, its
# corpus kept in .fuzz/<name>/, a crashing input written to .fuzz/crash-*. Without atheris (no
# wheel for this Python and no clang to build one), the hypothesis property tests instead, with
# random seeds and FUZZ_SCALE times their CI budget (HYPOTHESIS_PROFILE=fuzz, tests/unit/fuzzing.py).
FUZZ_SECONDS ?= 60
FUZZ_SCALE ?= 50
FUZZ_TARGETS ?= wire dhcp dhcp6 dns gateway
fuzz: venv
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris || true
	@if $(PY) -c 'import atheris' 2>/dev/null; then \
	  for t in $(FUZZ_TARGETS); do \
	    mkdir -p .fuzz/$$t; echo "== fuzz_$$t.py for $(FUZZ_SECONDS) s"; \
	    $(PY) tests/fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      -artifact_prefix=.fuzz/ .fuzz/$$t || exit 1; \
	  done; \
	else \
	  echo "atheris did not install: hypothesis property tests, HYPOTHESIS_PROFILE=fuzz"; \
	  HYPOTHESIS_PROFILE=fuzz FUZZ_SCALE=$(FUZZ_SCALE) $(VENV)/bin/pytest -q tests/unit/test_fuzz_*.py; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info
