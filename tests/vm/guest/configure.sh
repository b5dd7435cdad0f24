#!/bin/sh
# Runs INSIDE the image's chroot at build time (tests/vm/image.py), with /proc, /sys
# and /dev mounted in a private mount namespace.
#   $1  kernel A's .deb (trixie's own packaging: one package, files in /boot)
#   $2  kernel B's package name, installed with apt from the local repository
#       (Debian's new packaging: linux-image-R pulls linux-binary-R, linux-modules-R,
#       linux-base-R and a newer linux-base, exactly as in the guest later)
#   $3… liveupd's dependencies (debian/control), installed with apt from Debian's
#       archive (/etc/apt/sources.list, removed at the end)
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
kernel_a_deb=$1
kernel_b=$2
shift 2

echo "== liveupd's dependencies, from Debian's archive"
apt-get update -q
apt-get install -y -q --no-install-recommends "$@"
rm /etc/apt/sources.list

echo "== user tester (uid 1000)"
useradd --create-home --uid 1000 --user-group --shell /bin/bash tester
passwd --delete root >/dev/null

echo "== units"
systemctl enable systemd-networkd.service liveupd-test-agent.service \
    liveupd-test-boot-marker.service
# Nothing that slows boot or acts behind the tests' back. kexec-load would turn every
# reboot into a kexec.
for unit in apt-daily.timer apt-daily-upgrade.timer apt-daily.service \
        apt-daily-upgrade.service dpkg-db-backup.timer dpkg-db-backup.service \
        e2scrub_all.timer e2scrub_all.service e2scrub_reap.service fstrim.timer \
        fstrim.service man-db.timer man-db.service systemd-pstore.service \
        getty@tty1.service serial-getty@ttyS0.service console-getty.service \
        systemd-networkd-wait-online.service kexec-load.service kexec.service \
        systemd-timesyncd.service systemd-tmpfiles-clean.timer \
        systemd-update-utmp.service systemd-update-utmp-runlevel.service \
        systemd-networkd-persistent-storage.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
# Boot to multi-user.target (nothing graphical here); start sshd when a client
# connects rather than at every boot (only the SSH scenarios use it).
systemctl set-default multi-user.target
if [ -e /usr/lib/systemd/system/ssh.socket ]; then
    systemctl disable ssh.service
    systemctl enable ssh.socket
fi
for unit in systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
        proc-sys-fs-binfmt_misc.mount; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
# Generators run before any unit starts, at every boot, each a process that takes
# 0.2-0.5 s under TCG. Keep fstab's, the debug generator (test_watchdog puts
# systemd.mask= on the command line) and liveupd's own.
install -d /etc/systemd/system-generators
for gen in systemd-getty-generator systemd-gpt-auto-generator \
        systemd-hibernate-resume-generator systemd-rc-local-generator \
        systemd-run-generator systemd-ssh-generator systemd-system-update-generator \
        systemd-sysv-generator systemd-tpm2-generator; do
    ln -sf /dev/null "/etc/systemd/system-generators/$gen"
done
# TCG's `max` CPU offers SVM, so udev loads kvm_amd and kvm at every boot: work no
# scenario needs, and a module load patches kernel text while both vCPUs run, where
# QEMU's TCG defect struck (an oops in kmalloc with kvm loading, docs/vm-harness.md).
printf 'blacklist %s\n' kvm_amd kvm_intel kvm > /etc/modprobe.d/liveupd-test-no-kvm.conf
rm -f /etc/systemd/system/getty.target.wants/getty@tty1.service \
    /etc/systemd/system/timers.target.wants/* \
    /etc/systemd/system/multi-user.target.wants/e2scrub_reap.service \
    /etc/systemd/system/sysinit.target.wants/systemd-pstore.service
# man-db rebuilds its index on every package install (slow under TCG); `man` reads
# pages without it.
rm -f /var/lib/man-db/auto-update

echo "== the local package repository (no network in the guest)"
rm -rf /var/lib/apt/lists/*
apt-get update -q

echo "== initrd tool (provides linux-initramfs-tool), then the kernels"
dpkg -i /tmp/liveupd-test-initrd.deb
dpkg -i "$kernel_a_deb"
apt-get install -y -q --no-install-recommends "$kernel_b"
for pkg in "$(dpkg-deb -f "$kernel_a_deb" Package)" "$kernel_b"; do
    release=${pkg#linux-image-}
    test -s "/boot/initrd.img-$release"
    test -s "/boot/vmlinuz-$release" || test -s "/usr/lib/modules/$release/vmlinuz"
done

echo "== mark /etc and /var up to date with /usr"
# Else ConditionNeedsUpdate= holds on every boot of the throw-away overlay and
# ldconfig.service, systemd-update-done.service and the journal catalog update
# run each time (about 8 s of the critical chain under TCG).
/usr/lib/systemd/systemd-update-done

echo "== clean"
apt-get clean
rm -rf /var/cache/debconf/*-old /var/log/*.log /var/log/apt/* /tmp/* /var/tmp/*
# Keep the machine-id debootstrap made: an empty one makes every boot a "first boot"
# (presets applied again, slower). Keep apt's lists: `apt install` of the kernel
# packages in the guest reads them.
