#!/usr/bin/env bash
# Tests the packages as a sysadmin meets them. Needs root, network access to a Debian mirror,
# and cargo-deb, cargo-generate-rpm, lintian, rpm and debootstrap (scripts/dev setup installs
# them).
#   1. packaging/build makes the .deb and .rpm packages (revision 1).
#   2. lintian finds no error in the .debs (its warnings are overridden with reasons, in
#      packaging/debian/lintian/).
#   3. The .rpms: file lists, dependencies (the Slurm release), scriptlets (valid sh), and an
#      install into a scratch root with `rpm --root`, then removal.
#   4. A clean Debian 12 root made with debootstrap: apt installs the .debs (resolving their
#      dependencies from the mirror), then inside it: cohort --version, cohortd --check-config,
#      srun --help lists --cohort (the root's own Slurm loads the plugin), man pages render;
#      an upgrade to revision 2 keeps the changed config; remove keeps config and the users'
#      catalog; purge removes the config.
# COHORT_TEST_ROOTFS=FILE.tar reuses a debootstrapped root (made here when absent: set it to
# keep one between runs). Each step prints "ok: ..." or fails naming what went wrong.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fail() { echo -e "FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
[[ $(id -u) == 0 ]] || fail "needs root (debootstrap, chroot, rpm --root)"

W=$(mktemp -d /tmp/cohort-packages.XXXXXX)
R=$W/root
cleanup() {
    for m in proc dev/pts; do umount "$R/$m" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

# 1. Both formats, revision 2 kept aside for the upgrade, then revision 1.
COHORT_PACKAGE_REVISION=2 packaging/build deb > "$W/build2.log" 2>&1 || fail "packaging/build (revision 2):\n$(tail -20 "$W/build2.log")"
mkdir -p "$W/rev2" && cp target/packages/*.deb "$W/rev2/"
packaging/build > "$W/build.log" 2>&1 || fail "packaging/build:\n$(tail -20 "$W/build.log")"
P=$ROOT/target/packages
for name in cohort_ cohortd_ cohort-slurm_ cohort- cohortd- cohort-slurm-; do
    ls "$P/$name"0* > /dev/null 2>&1 || fail "no $name package in $P:\n$(ls "$P")"
done
ok "packages built: $(cd "$P" && echo *)"

# 2. lintian.
lintian --fail-on error,warning "$P"/*.deb > "$W/lintian.out" 2>&1 || fail "lintian:\n$(cat "$W/lintian.out")"
ok "lintian: no errors or warnings"

# The unit, as systemd reads it (its ExecStart pointed at this build).
if command -v systemd-analyze > /dev/null; then
    mkdir -p "$W/unit"
    sed "s|/usr/sbin/cohortd|$ROOT/target/release/cohortd|" packaging/cohortd.service > "$W/unit/cohortd.service"
    systemd-analyze verify --man=no "$W/unit/cohortd.service" > "$W/verify.out" 2>&1 || true
    [[ ! -s $W/verify.out ]] || fail "systemd-analyze verify cohortd.service:\n$(cat "$W/verify.out")"
    ok "systemd-analyze verify: cohortd.service is clean"
else
    echo "skipped: systemd-analyze verify (no systemd-analyze here)"
fi

# 3. The .rpms.
rpm -qlp "$P"/cohortd-0*.rpm > "$W/rpm-files"
for f in /usr/sbin/cohortd /etc/cohort/cohortd.toml /usr/lib/systemd/system/cohortd.service \
    /usr/share/man/man8/cohortd.8.gz /usr/share/man/man5/cohortd.toml.5.gz; do
    grep -qx "$f" "$W/rpm-files" || fail "cohortd.rpm lacks $f:\n$(cat "$W/rpm-files")"
done
rpm -qp --configfiles "$P"/cohortd-0*.rpm | grep -qx /etc/cohort/cohortd.toml || fail "cohortd.toml is not a config file in the rpm"
rpm -qlp "$P"/cohort-0*.rpm | grep -qx /usr/share/man/man1/cohort.1.gz || fail "cohort.rpm has no cohort(1)"
rpm -qlp "$P"/cohort-slurm-0*.rpm | grep -qx /usr/lib64/slurm/spank_cohort.so || fail "cohort-slurm.rpm: plugin path"
rpm -qp --requires "$P"/cohortd-0*.rpm | grep -q "libhwloc.so.15" || fail "cohortd.rpm does not require hwloc"
slurm=$(rpm -qp --requires "$P"/cohort-slurm-0*.rpm | awk '$1 == "slurm" {print $3}')
[[ -n $slurm ]] || fail "cohort-slurm.rpm does not require slurm"
rpm -qp --conflicts "$P"/cohort-slurm-0*.rpm | grep -q "^slurm >= " || fail "cohort-slurm.rpm does not conflict with other Slurm releases"
for script in --scripts; do
    rpm -qp $script "$P"/cohortd-0*.rpm > "$W/scriptlets"
done
for which in post preun postun; do
    sh -n "packaging/rpm/cohortd.$which" || fail "packaging/rpm/cohortd.$which is not valid sh"
    grep -q "$(head -1 "packaging/rpm/cohortd.$which")" "$W/scriptlets" || fail "cohortd.rpm lacks its $which scriptlet"
done
mkdir -p "$W/rpmroot"
rpm --root "$W/rpmroot" --initdb
# The scratch root has no Fedora base to satisfy libc and /bin/sh, nor a shell to run scriptlets.
rpm --root "$W/rpmroot" -i --nodeps --noscripts "$P"/*.rpm 2> "$W/rpm.err" || fail "rpm -i:\n$(cat "$W/rpm.err")"
[[ -x $W/rpmroot/usr/sbin/cohortd && -f $W/rpmroot/etc/slurm/plugstack.conf.d/cohort.conf ]] || fail "rpm --root installed no files"
grep -q "^optional /usr/lib64/slurm/spank_cohort.so" "$W/rpmroot/etc/slurm/plugstack.conf.d/cohort.conf" || fail "the rpm's plugstack snippet points elsewhere"
[[ $(rpm --root "$W/rpmroot" -qa | grep -c '^cohort') == 3 ]] || fail "rpm -qa: $(rpm --root "$W/rpmroot" -qa)"
rpm --root "$W/rpmroot" -e --nodeps --noscripts cohort cohortd cohort-slurm 2> "$W/rpm.err" || fail "rpm -e:\n$(cat "$W/rpm.err")"
[[ ! -e $W/rpmroot/usr/sbin/cohortd ]] || fail "rpm -e left cohortd"
ok "rpms: files, config, requires (slurm >= $slurm, hwloc), scriptlets; installed into and removed from a scratch root"

# 4. A clean Debian 12 root.
if [[ -n ${COHORT_TEST_ROOTFS:-} && -f $COHORT_TEST_ROOTFS ]]; then
    mkdir -p "$R" && tar -C "$R" -xf "$COHORT_TEST_ROOTFS"
else
    debootstrap --variant=minbase bookworm "$R" "$MIRROR" > "$W/debootstrap.log" 2>&1 \
        || fail "debootstrap:\n$(tail -20 "$W/debootstrap.log")"
    if [[ -n ${COHORT_TEST_ROOTFS:-} ]]; then tar -C "$R" -cf "$COHORT_TEST_ROOTFS" .; fi
fi
mount -t proc proc "$R/proc"
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
cp /etc/resolv.conf "$R/etc/resolv.conf"
mkdir -p "$R/tmp/debs" "$R/tmp/debs2"
cp "$P"/*.deb "$R/tmp/debs/" && cp "$W"/rev2/*.deb "$R/tmp/debs2/"
in_root apt-get update -q > "$W/apt.log" 2>&1 || fail "apt-get update in the root:\n$(tail "$W/apt.log")"
# man-db to render the pages; slurm-client is the root's Slurm (srun).
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    man-db slurm-client /tmp/debs/*.deb' > "$W/install.log" 2>&1 || fail "apt install:\n$(tail -30 "$W/install.log")"
grep -q "no cluster key yet" "$W/install.log" || fail "the install did not say how to make the cluster key:\n$(tail -30 "$W/install.log")"
version=$(in_root cohort --version) || fail "cohort --version"
[[ $version == "cohort $(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)" ]] || fail "cohort --version: $version"
# The verbs transport is in cohort, libibverbs is not in the root (only suggested): asking for
# RDMA fails at once, saying why.
[[ ! -e $R/usr/lib/x86_64-linux-gnu/libibverbs.so.1 ]] || fail "libibverbs was installed with the packages"
if in_root env COHORT_TRANSPORT=rdma cohort bench allreduce --ranks 1 -b 8 -e 8 > "$W/rdma.out" 2>&1; then
    fail "COHORT_TRANSPORT=rdma worked without libibverbs:\n$(cat "$W/rdma.out")"
fi
grep -q "COHORT_TRANSPORT=rdma, but no RDMA device" "$W/rdma.out" || fail "no reason for refusing RDMA:\n$(cat "$W/rdma.out")"
# The daemon refuses to start without the key, and says how to make one.
if in_root cohortd --check-config > "$W/nokey.out" 2>&1; then fail "cohortd accepted a missing cluster key"; fi
grep -q -- "--gen-key" "$W/nokey.out" || fail "no hint to --gen-key:\n$(cat "$W/nokey.out")"
in_root cohortd --gen-key /etc/cohort/cluster.key > /dev/null
[[ $(stat -c %a "$R/etc/cohort/cluster.key") == 600 ]] || fail "the key's mode is $(stat -c %a "$R/etc/cohort/cluster.key")"
in_root cohortd --check-config > "$W/check.out" 2>&1 || fail "cohortd --check-config:\n$(cat "$W/check.out")"
[[ -L $R/etc/systemd/system/multi-user.target.wants/cohortd.service ]] || fail "cohortd.service is not enabled"
cat > "$R/etc/slurm/slurm.conf" <<'EOF'
ClusterName=check
SlurmctldHost=localhost
NodeName=localhost CPUs=1
PartitionName=debug Nodes=localhost Default=YES
EOF
in_root srun --help > "$W/srun.out" 2>&1 || fail "srun --help:\n$(cat "$W/srun.out")"
grep -q -- "--cohort " "$W/srun.out" && grep -q -- "--cohort-exp" "$W/srun.out" \
    || fail "srun --help does not list the plugin's options:\n$(cat "$W/srun.out")"
for page in cohort cohortd cohortd.toml spank_cohort cohort-trials; do
    in_root man -P cat "$page" 2> "$W/man.err" | grep -q NAME || fail "man $page:\n$(cat "$W/man.err")"
done
[[ -f $R/usr/share/bash-completion/completions/cohort ]] || fail "no bash completion"
# The maintainer scripts run again (a reinstall) without harm.
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall /tmp/debs/*.deb' \
    > "$W/reinstall.log" 2>&1 || fail "reinstall:\n$(tail -30 "$W/reinstall.log")"
in_root cohortd --check-config > /dev/null 2>&1 || fail "cohortd --check-config after a reinstall"
ok "Debian 12 root: apt resolved and installed; cohort --version; RDMA refused without libibverbs, saying why; no key refused; cohortd --check-config; unit enabled; srun lists --cohort; man pages render; reinstall harmless"

# Upgrade: the administrator's change to the config stays.
sed -i '1i node_name = "changed-by-admin"' "$R/etc/cohort/cohortd.toml"
mkdir -p "$R/srv/catalog/experiments" && echo keep > "$R/srv/catalog/experiments/marker"
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/debs2/*.deb' \
    > "$W/upgrade.log" 2>&1 \
    || fail "upgrade:\n$(tail -30 "$W/upgrade.log")"
[[ $(in_root dpkg-query -W -f '${Version}' cohortd) == *-2 ]] || fail "not upgraded: $(in_root dpkg-query -W cohortd)"
grep -q changed-by-admin "$R/etc/cohort/cohortd.toml" || fail "the upgrade lost the config change"
in_root cohortd --check-config > /dev/null 2>&1 || fail "cohortd --check-config after the upgrade"
ok "upgrade to revision 2: config kept"

# Remove keeps the config; purge removes it; the users' catalog is never touched.
in_root apt-get remove -y -q cohort-slurm cohortd cohort > "$W/remove.log" 2>&1 || fail "remove:\n$(tail "$W/remove.log")"
[[ ! -e $R/usr/sbin/cohortd && -f $R/etc/cohort/cohortd.toml ]] || fail "remove: binary left or config gone"
in_root apt-get purge -y -q cohort-slurm cohortd cohort > "$W/purge.log" 2>&1 || fail "purge:\n$(tail "$W/purge.log")"
[[ ! -e $R/etc/cohort ]] || fail "purge left /etc/cohort: $(ls -la "$R/etc/cohort")"
[[ ! -e $R/etc/slurm/plugstack.conf.d/cohort.conf ]] || fail "purge left the plugstack snippet"
[[ $(cat "$R/srv/catalog/experiments/marker") == keep ]] || fail "the catalog was touched"
ok "remove keeps the config, purge removes it and the key; the catalog untouched"
echo "all package tests passed"
