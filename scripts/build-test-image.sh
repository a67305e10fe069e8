#!/usr/bin/env bash
# Builds the small image the Docker backend's tests, examples and benchmark run, on a machine
# that cannot pull from a registry: a root filesystem holding only Debian's statically linked
# busybox (one symlink per applet, so sh, cat, mv, kill, sleep, tar ... exist), imported with
# `docker import`. Nothing is pulled; apt-get downloads one Debian package.
#
# Usage: scripts/build-test-image.sh [TAG]     default TAG: sandbox-test/busybox:latest
#        (sandbox_core::config::DEFAULT_DOCKER_IMAGE, the Docker backend's default image)
# Idempotent: exits at once when the image exists. Needs docker, apt-get and dpkg-deb.
set -euo pipefail

tag="${1:-sandbox-test/busybox:latest}"

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "build-test-image: the Docker daemon does not answer (docker version failed)" >&2
  exit 1
fi
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "image $tag already present"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# The package list may be missing or stale on a fresh machine: update once and retry.
if ! apt-get download busybox-static >/dev/null 2>&1; then
  apt-get update -qq >/dev/null
  apt-get download busybox-static >/dev/null
fi
dpkg-deb -x busybox-static_*.deb pkg

rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,etc,root,tmp,run,workspace}
cp pkg/bin/busybox "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
# busybox-static has no printenv applet; the tests (and people) use it.
cat > "$rootfs/bin/printenv" <<'PRINTENV'
#!/bin/sh
# printenv [NAME...]: prints the environment, or the value of each NAME (exit 1 if one is unset).
[ "$#" -eq 0 ] && exec env
rc=0
for name in "$@"; do
  case "$name" in
    '' | [0-9]* | *[!A-Za-z0-9_]*) rc=1; continue ;;
  esac
  # $name is a validated identifier, so this eval only ever expands one variable.
  eval "if [ -n \"\${$name+set}\" ]; then printf '%s\\n' \"\$$name\"; else rc=1; fi"
done
exit "$rc"
PRINTENV
chmod 0755 "$rootfs/bin/printenv"
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
chmod 1777 "$rootfs/tmp"

tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
  docker import \
    --change 'ENV PATH=/bin' \
    --change 'WORKDIR /workspace' \
    --change 'CMD ["/bin/sh"]' \
    - "$tag" >/dev/null
echo "built $tag"
