#!/bin/sh
# Runs INSIDE the image's chroot at build time (tests/vm/image.py), with /proc, /sys
# and /dev mounted in a private mount namespace. Arguments: the kernel .debs to install.
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin

echo "== user tester (uid 1000)"
useradd --create-home --uid 1000 --user-group --shell /bin/bash tester
passwd --delete root >/dev/null

echo "== units"
systemctl enable systemd-networkd.service liveupd-test-agent.service \
    liveupd-test-boot-marker.service
# Nothing that slows boot or acts behind the tests' back. kexec-load would turn every
# reboot into a kexec (it is an init script: mask the generated unit by name).
for unit in apt-daily.timer apt-daily-upgrade.timer apt-daily.service \
        apt-daily-upgrade.service dpkg-db-backup.timer dpkg-db-backup.service \
        e2scrub_all.timer e2scrub_all.service e2scrub_reap.service fstrim.timer \
        fstrim.service man-db.timer man-db.service systemd-pstore.service \
        getty@tty1.service serial-getty@ttyS0.service console-getty.service \
        systemd-networkd-wait-online.service kexec-load.service kexec.service \
        systemd-timesyncd.service systemd-tmpfiles-clean.timer \
        systemd-update-utmp.service systemd-update-utmp-runlevel.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done
rm -f /etc/systemd/system/getty.target.wants/getty@tty1.service \
    /etc/systemd/system/timers.target.wants/* \
    /etc/systemd/system/multi-user.target.wants/e2scrub_reap.service \
    /etc/systemd/system/sysinit.target.wants/systemd-pstore.service

echo "== initrd tool (provides linux-initramfs-tool), then the kernels"
dpkg -i /tmp/liveupd-test-initrd.deb
dpkg -i "$@"
for deb in "$@"; do
    pkg=$(dpkg-deb -f "$deb" Package)
    release=${pkg#linux-image-}
    test -s "/boot/vmlinuz-$release"
    test -s "/boot/initrd.img-$release"
done

echo "== clean"
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/*.log /tmp/* /var/tmp/*
# Keep the machine-id debootstrap made: an empty one makes every boot a "first boot"
# (presets applied again, slower).
