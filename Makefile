# liveupd: the two commands a new user needs are `make demo` and `make test`.
#
#   make test    set up everything from nothing (apt packages, virtualenv), then
#                run the whole suite: linters and type checker (tests/test_lint.py),
#                host tests, and the VM scenarios
#   make check   the fast inner loop: the same without the VM scenarios
#   make soak-fleet  Ansible's reboot module 5 times per mode in a VM (not in test)
#   make demo    boot a VM and live-update it from one real kernel to another
#   make try     liveupd in a dry run on a private bus, and a shell to try
#                liveupctl in (no root, no VM, nothing touched: docs/try.md)
#   make bench   downtime benchmarks (see docs/benchmarks.md)
#   make deb     the Debian package (Debian 13): build/deb/liveupd_*_all.deb
#   make install DESTDIR=...   install as a distribution package would (PREFIX=/usr)
#   make ffi     write liveupd/_libc.py, cffi's declarations, from liveupd/_libc_build.py

SHELL := /bin/bash
# The interpreter the installed programs run with (their #! line), and the one
# that makes the virtualenv: never a python3 that happens to come first on PATH.
PYTHON ?= /usr/bin/python3
VENV_PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# A second virtualenv pinned to what Debian 13 ships, for the D-Bus and
# configuration tests (`make check-debian13`, part of `make test`). liveupctl and
# the kernel hooks run on Debian 13's own python3-dbus-fast and python3-cffi in
# every VM scenario (the guest is trixie with the .deb installed): here, the
# service's bus contract, the client's error mapping, the configuration model
# and libc through cffi's generated declarations (liveupd/_libc.py).
VENV13 ?= .venv-debian13
DEBIAN13_PINS := dbus-fast==2.44.1 cffi==1.17.1
DEBIAN13_TESTS ?= tests/dbus tests/unit tests/ctl/test_activation.py tests/ctl/test_json.py
PREFIX ?= /usr
DESTDIR ?=
SYSCONFDIR ?= /etc
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# Host tests run in parallel (pytest-xdist). The VM scenarios run in VM_JOBS workers,
# one module (its guests) per worker at a time: on 2 cores two workers end the suite
# about a fifth sooner than one, which keeps `make test` inside CI's budget. Two guests
# at once meet QEMU's TCG code-patching defect more often; the harness recognises it
# and reruns the module (docs/vm-harness.md). VM_JOBS=1 runs one guest at a time.
HOST_JOBS ?= 2
VM_JOBS ?= 2
VM_XDIST := $(if $(filter-out 1,$(VM_JOBS)),-n $(VM_JOBS) --dist loadfile)

# Host packages the suite needs: QEMU and debootstrap for the VM scenarios,
# dbus-daemon for private buses, headers to build dbus-python and PyGObject
# (python-dbusmock), xmllint and the DTDs for the shipped XML files, shellcheck
# for the shell hooks, node to check the example polkit rule, tmux to drive
# liveupctl in a real terminal (tests/ctl/test_terminal.py: progress, Ctrl-C);
# systemd's EFI stub (systemd-boot-efi: linuxx64.efi.stub) and objcopy (binutils)
# to build unified kernel images from real Debian kernels in the tests; docutils
# for the man pages, bash and zsh to try the completions, and the Debian
# packaging tools (debian/control's Build-Depends, lintian) for `make deb`;
# cryptsetup-bin to read real LUKS headers (tests/storage/test_luks_volumes.py).
APT_PACKAGES := \
	qemu-system-x86 qemu-utils debootstrap e2fsprogs \
	dbus-daemon dbus-bin libdbus-1-dev libglib2.0-dev pkg-config \
	libgirepository1.0-dev libcairo2-dev gir1.2-glib-2.0 \
	libxml2-utils polkitd systemd util-linux iproute2 kmod shellcheck nodejs \
	systemd-boot-efi binutils tmux \
	python3-docutils bash-completion zsh \
	dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all \
	python3-setuptools fakeroot lintian cryptsetup-bin

.PHONY: check-prefix all setup host-deps venv venv-debian13 lint typecheck check check-debian13 test \
	soak-fleet demo try bench man deb lintian sdist install install-python install-data clean ffi

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
	test -x $(VPY) || $(VENV_PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check liveupd tests bench tryout
	$(VENV)/bin/ruff format --check liveupd tests bench tryout

typecheck: venv
	$(VENV)/bin/mypy

venv-debian13: $(VENV13)/.installed

$(VENV13)/.installed: pyproject.toml
	test -x $(VENV13)/bin/python || $(VENV_PYTHON) -m venv $(VENV13)
	$(VENV13)/bin/python -m pip install -q --upgrade pip
	$(VENV13)/bin/python -m pip install -q -e '.[test]' $(DEBIAN13_PINS)
	touch $@

check: setup
	$(VENV)/bin/pytest -m "not vm" -n $(HOST_JOBS) $(PYTEST_ARGS)

# The oldest supported dbus-fast (Debian 13's): the D-Bus service, the client,
# the kernel hooks and the configuration model.
check-debian13: host-deps venv-debian13
	$(VENV13)/bin/python -c 'import dbus_fast.__version__ as d; \
		print("debian13 venv: dbus-fast", d.__version__)'
	$(VENV13)/bin/python -m pytest -m "not vm" -n $(HOST_JOBS) -p no:cacheprovider $(DEBIAN13_TESTS)

# A VM scenario whose guest kernel hit a known QEMU TCG defect (an int3 oops in
# early boot, tests/vm/serial.py) runs once more; any other failure fails. A module
# whose shared guest the defect killed runs again, whole (tests/vm/rerun_defects.py).
VM_RERUN := --reruns 1 --only-rerun EmulatorDefectError

test: check check-debian13
	LIVEUPD_VM_SLOTS=$(VM_JOBS) $(VPY) -m tests.vm.rerun_defects \
		$(VENV)/bin/pytest -m vm $(VM_XDIST) $(VM_RERUN) $(PYTEST_ARGS)

# Not part of `make test`: Ansible's reboot module five times in a row per mode, on
# one guest (issue 20's hang was intermittent). About 15 min under TCG.
soak-fleet: setup
	$(VENV)/bin/pytest -m vm -s $(VM_RERUN) $(PYTEST_ARGS) tests/vm/fleet/soak_fleet.py

demo: setup
	$(VPY) -m tests.vm.demo

# The sample configuration, simulated machine and hooks are in tryout/.
try: setup
	$(VPY) -m tryout

# OVMF for the UEFI reboot beside the SeaBIOS one (bench/vm.py:run_ovmf).
bench: APT_PACKAGES += ovmf
bench: setup
	$(VPY) -m bench.run

# libc's C declarations for cffi's out-of-line ABI mode: liveupd/_libc_build.py
# parses them (cffi, pycparser) and writes liveupd/_libc.py, which is committed;
# at run time only _cffi_backend loads it (tests/unit/test_libc_ffi.py).
ffi: venv
	$(VPY) -m liveupd._libc_build

# ---- the Debian package ---------------------------------------------------
# Built from a clean export of the tree (what git would commit), in build/deb/,
# so that nothing outside the worktree is written and untracked files cannot
# leak in. The .deb lands in build/deb/.
DEB_BUILD_ENV = env -u PYTHONPATH -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin

deb: host-deps
	rm -rf build/deb
	mkdir -p build/deb/liveupd
	git ls-files -z -co --exclude-standard | \
		xargs -0 -I{} sh -c 'test -e "{}" && cp --parents -a "{}" build/deb/liveupd/ || true'
	cd build/deb/liveupd && $(DEB_BUILD_ENV) dpkg-buildpackage -us -uc -b
	ls -l build/deb/*.deb

lintian: deb
	$(DEB_BUILD_ENV) lintian --fail-on error,warning --info build/deb/liveupd_*.changes

# The release tarball (its contents: MANIFEST.in; tests/test_packaging.py checks it).
sdist: venv
	rm -rf build/sdist
	$(VPY) -m build --sdist --no-isolation --outdir build/sdist .

# ---- man pages: written in reStructuredText (man/*.rst), converted here -----
RST2MAN ?= rst2man
MAN_SOURCES := $(wildcard man/*.rst)
MAN_PAGES := $(patsubst man/%.rst,build/man/%,$(MAN_SOURCES))

man: $(MAN_PAGES)

build/man/%: man/%.rst
	@mkdir -p build/man
	$(RST2MAN) --exit-status=2 $< $@

# ---- installation, laid out as a distribution package would -------------
# Everything goes where Debian 13's systemd, dbus, polkitd and kernel packages
# look: PREFIX must be /usr (those programs never read /usr/local), DESTDIR
# stages it. The daemon is an admin's program: /usr/sbin/liveupd, liveupd(8).
PYTHONDIR ?= $(shell $(PYTHON) -c 'import sysconfig; \
	s = "deb_system" if "deb_system" in sysconfig.get_scheme_names() else None; \
	print(sysconfig.get_path("purelib", s, vars={"base": "$(PREFIX)", "platbase": "$(PREFIX)"}) if s else \
	      sysconfig.get_path("purelib", vars={"base": "$(PREFIX)", "platbase": "$(PREFIX)"}))')
BINDIR := $(PREFIX)/bin
SBINDIR := $(PREFIX)/sbin
LIBEXECDIR := $(PREFIX)/libexec/liveupd
VENDORHOOKDIR := $(PREFIX)/lib/liveupd/hooks.d
UNITDIR := $(PREFIX)/lib/systemd/system
SHUTDOWNDIR := $(PREFIX)/lib/systemd/system-shutdown
GENERATORDIR := $(PREFIX)/lib/systemd/system-generators
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
DBUSDIR := $(PREFIX)/share/dbus-1
POLKITDIR := $(PREFIX)/share/polkit-1/actions
KERNELINSTALLDIR := $(PREFIX)/lib/kernel/install.d
# Debian 13's linux-base runs kernel hooks from /usr/share/kernel/*.d as well as
# /etc/kernel/*.d (an admin's file of the same name in /etc wins). Debian 12's
# kernel packages read /etc/kernel only: KERNELHOOKDIR=/etc/kernel there.
KERNELHOOKDIR ?= $(PREFIX)/share/kernel
MANDIR := $(PREFIX)/share/man
BASHCOMPDIR := $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR := $(PREFIX)/share/zsh/vendor-completions
EXAMPLESDIR := $(PREFIX)/share/doc/liveupd/examples

# A program: the module's function run by $(PYTHON), named in the #! line.
define entry_point
	printf '#!%s\nimport sys\n\nfrom %s import %s\n\nsys.exit(%s())\n' \
		"$(PYTHON)" "$(2)" "$(3)" "$(3)" > $(1)
	chmod 0755 $(1)
endef

check-prefix:
	@if [ "$(PREFIX)" != /usr ]; then \
		echo "make install: PREFIX=$(PREFIX) refused. liveupd's systemd units, bus policy," >&2; \
		echo "  polkit actions and kernel hooks only work where systemd, dbus, polkitd and" >&2; \
		echo "  the kernel packages look for them, under /usr and /etc: keep PREFIX=/usr" >&2; \
		echo "  and stage elsewhere with DESTDIR=..." >&2; \
		exit 2; \
	fi
	@case "$(PYTHON)" in /*) ;; *) echo "make install: PYTHON must be an absolute path, not $(PYTHON)" >&2; exit 2;; esac

install: check-prefix install-python install-data

# The package itself, as source only: no bytecode is shipped (Debian's package
# compiles it at install time through dh_python3; elsewhere run
# `$(PYTHON) -m compileall $(PYTHONDIR)/liveupd` after installing if you like).
install-python: check-prefix
	install -d $(DESTDIR)$(PYTHONDIR)
	rm -rf $(DESTDIR)$(PYTHONDIR)/liveupd
	cp -r liveupd $(DESTDIR)$(PYTHONDIR)/liveupd
	find $(DESTDIR)$(PYTHONDIR)/liveupd -name __pycache__ -prune -exec rm -rf {} +
	find $(DESTDIR)$(PYTHONDIR)/liveupd -type f -exec chmod 0644 {} +

# Everything but the Python package (debian/rules runs this after pybuild).
install-data: check-prefix man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBEXECDIR)
	$(call entry_point,$(DESTDIR)$(SBINDIR)/liveupd,liveupd.daemon.main,main)
	$(call entry_point,$(DESTDIR)$(BINDIR)/liveupctl,liveupd.ctl.main,main)
	$(call entry_point,$(DESTDIR)$(LIBEXECDIR)/kernel-hook,liveupd.fleet.kernelhook,main)
	$(call entry_point,$(DESTDIR)$(LIBEXECDIR)/shutdown-unbind,liveupd.devices.shutdown,main)
	install -d $(DESTDIR)$(VENDORHOOKDIR)
	for f in hooks.d/*; do [ -e "$$f" ] || continue; \
		case "$$f" in *.hook) m=0644;; *) m=0755;; esac; \
		install -m $$m "$$f" $(DESTDIR)$(VENDORHOOKDIR)/; done
	install -d $(DESTDIR)$(DBUSDIR)/system.d $(DESTDIR)$(DBUSDIR)/system-services \
		$(DESTDIR)$(DBUSDIR)/interfaces $(DESTDIR)$(POLKITDIR)
	install -m 0644 dbus/org.liveupd.LiveUpdate1.conf $(DESTDIR)$(DBUSDIR)/system.d/
	install -m 0644 dbus/org.liveupd.LiveUpdate1.service $(DESTDIR)$(DBUSDIR)/system-services/
	install -m 0644 dbus/org.liveupd.LiveUpdate1.xml $(DESTDIR)$(DBUSDIR)/interfaces/
	install -m 0644 dbus/org.liveupd.policy $(DESTDIR)$(POLKITDIR)/
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SHUTDOWNDIR) $(DESTDIR)$(TMPFILESDIR)
	install -m 0644 units/liveupd.service units/liveupd-verify.service $(DESTDIR)$(UNITDIR)/
	# Verification must run on every boot that follows a transition: enabled
	# statically, as systemd's own units are (its Condition skips other boots).
	install -d $(DESTDIR)$(UNITDIR)/sysinit.target.wants
	ln -sf ../liveupd-verify.service $(DESTDIR)$(UNITDIR)/sysinit.target.wants/liveupd-verify.service
	install -m 0644 units/liveupd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/liveupd.conf
	install -m 0755 units/liveupd-shutdown $(DESTDIR)$(SHUTDOWNDIR)/liveupd
	# [preserve] units: the new boot restores each service from its checkpoint.
	install -d $(DESTDIR)$(GENERATORDIR)
	$(call entry_point,$(DESTDIR)$(GENERATORDIR)/liveupd-preserve-generator,liveupd.preserve.generator,main)
	install -d $(DESTDIR)$(KERNELINSTALLDIR) \
		$(DESTDIR)$(KERNELHOOKDIR)/postinst.d $(DESTDIR)$(KERNELHOOKDIR)/postrm.d
	install -m 0755 kernel-install/99-liveupd.install $(DESTDIR)$(KERNELINSTALLDIR)/
	install -m 0755 kernel-install/postinst.d/zz-liveupd $(DESTDIR)$(KERNELHOOKDIR)/postinst.d/
	install -m 0755 kernel-install/postrm.d/zz-liveupd $(DESTDIR)$(KERNELHOOKDIR)/postrm.d/
	for page in $(MAN_PAGES); do \
		sect=$${page##*.}; install -d $(DESTDIR)$(MANDIR)/man$$sect; \
		install -m 0644 $$page $(DESTDIR)$(MANDIR)/man$$sect/; done
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 0644 completions/liveupctl.bash $(DESTDIR)$(BASHCOMPDIR)/liveupctl
	install -m 0644 completions/_liveupctl $(DESTDIR)$(ZSHCOMPDIR)/_liveupctl
	install -d $(DESTDIR)$(EXAMPLESDIR)
	install -m 0644 docs/examples/liveupd.conf docs/examples/50-liveupd-group.rules \
		$(DESTDIR)$(EXAMPLESDIR)/
	install -d $(DESTDIR)$(SYSCONFDIR)/liveupd/hooks.d $(DESTDIR)$(SYSCONFDIR)/liveupd/liveupd.conf.d

clean:
	rm -rf $(VENV) $(VENV13) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
