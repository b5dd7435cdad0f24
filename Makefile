# liveupd: the two commands a new user needs are `make demo` and `make test`.
#
#   make test    set up everything from nothing (apt packages, virtualenv), then
#                run the whole suite: linters and type checker (tests/test_lint.py),
#                host tests, and the VM scenarios
#   make check   the fast inner loop: the same without the VM scenarios
#   make demo    boot a VM and live-update it from one real kernel to another
#   make bench   downtime benchmarks (see docs/benchmarks.md)
#   make install DESTDIR=... PREFIX=/usr   install as a distribution package would

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

# Host packages the suite needs: QEMU and debootstrap for the VM scenarios,
# dbus-daemon for private buses, headers to build dbus-python and PyGObject
# (python-dbusmock), xmllint and the DTDs for the shipped XML files, shellcheck
# for the shell hooks, node to check the example polkit rule; systemd's EFI stub
# (systemd-boot-efi: linuxx64.efi.stub) and objcopy (binutils) to build unified
# kernel images from real Debian kernels in the tests.
APT_PACKAGES := \
	qemu-system-x86 qemu-utils debootstrap e2fsprogs \
	dbus-daemon dbus-bin libdbus-1-dev libglib2.0-dev pkg-config \
	libgirepository1.0-dev libcairo2-dev gir1.2-glib-2.0 \
	libxml2-utils polkitd systemd util-linux iproute2 kmod shellcheck nodejs \
	systemd-boot-efi binutils

.PHONY: all setup host-deps venv lint typecheck check test demo bench install clean

all: check

setup: host-deps venv

host-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing host packages:" $$missing; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check liveupd tests bench
	$(VENV)/bin/ruff format --check liveupd tests bench

typecheck: venv
	$(VENV)/bin/mypy

check: setup
	$(VENV)/bin/pytest -m "not vm" $(PYTEST_ARGS)

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(VPY) -m tests.vm.demo

# OVMF for the UEFI reboot beside the SeaBIOS one (bench/vm.py:run_ovmf).
bench: APT_PACKAGES += ovmf
bench: setup
	$(VPY) -m bench.run

# ---- installation, laid out as a distribution package would -------------
PYTHONDIR ?= $(shell $(PYTHON) -c 'import sysconfig; \
	s = "deb_system" if "deb_system" in sysconfig.get_scheme_names() else None; \
	print(sysconfig.get_path("purelib", s, vars={"base": "$(PREFIX)", "platbase": "$(PREFIX)"}) if s else \
	      sysconfig.get_path("purelib", vars={"base": "$(PREFIX)", "platbase": "$(PREFIX)"}))')
BINDIR := $(PREFIX)/bin
LIBEXECDIR := $(PREFIX)/lib/liveupd
UNITDIR := $(PREFIX)/lib/systemd/system
SHUTDOWNDIR := $(PREFIX)/lib/systemd/system-shutdown
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
DBUSDIR := $(PREFIX)/share/dbus-1
POLKITDIR := $(PREFIX)/share/polkit-1/actions
KERNELINSTALLDIR := $(PREFIX)/lib/kernel/install.d

install:
	install -d $(DESTDIR)$(PYTHONDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)/hooks.d
	rm -rf $(DESTDIR)$(PYTHONDIR)/liveupd
	cp -r liveupd $(DESTDIR)$(PYTHONDIR)/liveupd
	find $(DESTDIR)$(PYTHONDIR)/liveupd -name __pycache__ -prune -exec rm -rf {} +
	# Byte-compile now: the service never writes bytecode (a frozen filesystem
	# must not be written to), and compiling at every start would be slow.
	$(PYTHON) -m compileall -q -s "$(DESTDIR)" -p / $(DESTDIR)$(PYTHONDIR)/liveupd
	for s in liveupd:liveupd.daemon.main liveupctl:liveupd.ctl.main; do \
		name=$${s%%:*}; mod=$${s#*:}; \
		printf '#!%s\nimport sys\nfrom %s import main\nsys.exit(main())\n' \
			"$$($(PYTHON) -c 'import sys; print(sys.executable)')" "$$mod" > $(DESTDIR)$(BINDIR)/$$name; \
		chmod 0755 $(DESTDIR)$(BINDIR)/$$name; \
	done
	for f in hooks.d/*; do [ -e "$$f" ] || continue; \
		case "$$f" in *.hook) m=0644;; *) m=0755;; esac; \
		install -m $$m "$$f" $(DESTDIR)$(LIBEXECDIR)/hooks.d/; done
	install -d $(DESTDIR)$(SYSCONFDIR)/liveupd/hooks.d $(DESTDIR)$(SYSCONFDIR)/liveupd/liveupd.conf.d
	install -d $(DESTDIR)$(DBUSDIR)/system.d $(DESTDIR)$(DBUSDIR)/system-services $(DESTDIR)$(DBUSDIR)/interfaces
	if [ -f dbus/org.liveupd.LiveUpdate1.conf ]; then \
		install -m 0644 dbus/org.liveupd.LiveUpdate1.conf $(DESTDIR)$(DBUSDIR)/system.d/; \
		install -m 0644 dbus/org.liveupd.LiveUpdate1.service $(DESTDIR)$(DBUSDIR)/system-services/; \
		install -m 0644 dbus/org.liveupd.LiveUpdate1.xml $(DESTDIR)$(DBUSDIR)/interfaces/; \
		install -d $(DESTDIR)$(POLKITDIR); \
		install -m 0644 dbus/org.liveupd.policy $(DESTDIR)$(POLKITDIR)/; \
	fi
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SHUTDOWNDIR) $(DESTDIR)$(TMPFILESDIR)
	for f in units/*.service units/*.target; do [ -e "$$f" ] || continue; \
		install -m 0644 "$$f" $(DESTDIR)$(UNITDIR)/; done
	# Verification must run on every boot that follows a transition: enabled
	# statically, as systemd's own units are (its Condition skips other boots).
	install -d $(DESTDIR)$(UNITDIR)/sysinit.target.wants
	ln -sf ../liveupd-verify.service $(DESTDIR)$(UNITDIR)/sysinit.target.wants/liveupd-verify.service
	if [ -f units/liveupd.tmpfiles ]; then \
		install -m 0644 units/liveupd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/liveupd.conf; fi
	if [ -f units/liveupd-shutdown ]; then \
		install -m 0755 units/liveupd-shutdown $(DESTDIR)$(SHUTDOWNDIR)/liveupd; fi
	if [ -d kernel-install ]; then \
		install -d $(DESTDIR)$(KERNELINSTALLDIR) $(DESTDIR)$(SYSCONFDIR)/kernel/postinst.d $(DESTDIR)$(SYSCONFDIR)/kernel/postrm.d; \
		for f in kernel-install/*.install; do [ -e "$$f" ] || continue; \
			install -m 0755 "$$f" $(DESTDIR)$(KERNELINSTALLDIR)/; done; \
		[ ! -f kernel-install/postinst.d/zz-liveupd ] || install -m 0755 kernel-install/postinst.d/zz-liveupd $(DESTDIR)$(SYSCONFDIR)/kernel/postinst.d/; \
		[ ! -f kernel-install/postrm.d/zz-liveupd ] || install -m 0755 kernel-install/postrm.d/zz-liveupd $(DESTDIR)$(SYSCONFDIR)/kernel/postrm.d/; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
