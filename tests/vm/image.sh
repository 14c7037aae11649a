#!/usr/bin/env bash
# Builds (once) the Debian 12 VM image the VM tests boot under qemu: Debian's own kernel, which
# has Soft-RoCE (rdma_rxe), the NFS server and client and 9p; a minimal root with rdma-core and
# the NFS tools; a small initramfs that loads the modules needed to reach the root. Prints the
# directory holding vmlinuz, initrd.img and root.img: .deps/vm/<key>, the key made of this
# script, the VM's init and the kernel's version, so a change to either makes a new image.
# Needs root, debootstrap, busybox-static, cpio, e2fsprogs (scripts/dev setup installs them).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MIRROR=${COHORT_VM_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KVER=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n 1)
[[ -n $KVER ]] || { echo "image.sh: cannot tell Debian's kernel version (apt-cache depends linux-image-amd64)" >&2; exit 1; }
KEY=$(cat "$HERE/image.sh" "$HERE/init" | sha256sum | cut -c1-12)-$KVER
OUT=$ROOT/.deps/vm/$KEY
if [[ -f $OUT/done ]]; then
    echo "$OUT"
    exit 0
fi
say() { echo "image.sh: $*" >&2; }
work=$(mktemp -d /tmp/cohort-vm-image.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
cd "$work"

say "Debian's kernel $KVER"
apt-get download -q "linux-image-$KVER" >&2
dpkg -x linux-image-*.deb kernel
modules=kernel/lib/modules/$KVER
depmod -b kernel "$KVER"

say "a minimal Debian 12 root (debootstrap, about 2 minutes)"
debootstrap --variant=minbase \
    --include=rdma-core,ibverbs-providers,ibverbs-utils,libibverbs1,librdmacm1,perftest,iproute2,kmod,nfs-kernel-server,nfs-common,procps,libhwloc15,libudev1,python3 \
    bookworm rootfs "$MIRROR" > debootstrap.log 2>&1 || { tail -n 20 debootstrap.log >&2; exit 1; }
# The kernel's modules, without those of hardware a VM does not have.
mkdir -p "rootfs/lib/modules/$KVER"
(cd "$modules" && tar --exclude='kernel/drivers/gpu' --exclude='kernel/sound' \
    --exclude='kernel/drivers/net/wireless' --exclude='kernel/drivers/net/ethernet' \
    --exclude='kernel/drivers/media' --exclude='kernel/drivers/infiniband/hw' -cf - .) \
    | tar -C "rootfs/lib/modules/$KVER" -xf -
chroot rootfs depmod "$KVER"
install -m 0755 "$HERE/init" rootfs/sbin/cohort-vm-init
# nfsd's and lockd's grace periods, short: the first locks would otherwise wait 90 s.
echo "options lockd nlm_grace_period=10" > rootfs/etc/modprobe.d/lockd.conf
rm -rf rootfs/var/cache/apt/archives/*.deb rootfs/usr/share/doc rootfs/usr/share/man
say "root.img"
truncate -s 1G root.img
mkfs.ext4 -q -F -L cohortvm -d rootfs root.img

say "the initramfs (busybox and the modules that reach the root)"
mkdir -p initramfs/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox initramfs/bin/busybox
for m in virtio_pci virtio_blk ext4 9p 9pnet_virtio virtio_net virtio_rng; do
    modprobe -d kernel -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' > order
: > initramfs/load
while read -r path; do
    name=$(basename "$path")
    cp "$path" "initramfs/lib/modules/$name"
    echo "$name" >> initramfs/load
done < order
cat > initramfs/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do
    case $m in *.ko.xz) xz -dc "/lib/modules/$m" > /tmp.ko && insmod /tmp.ko; rm -f /tmp.ko ;;
               *) insmod "/lib/modules/$m" ;; esac
done < /load
for _ in $(seq 1 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /newroot || { echo "initramfs: cannot mount the root"; poweroff -f; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/cohort-vm-init
INIT
chmod 0755 initramfs/init
(cd initramfs && find . | cpio -o -H newc --quiet | gzip -1) > initrd.img

mkdir -p "$OUT"
cp "kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp initrd.img root.img "$OUT/"
touch "$OUT/done"
say "ready: $OUT ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
