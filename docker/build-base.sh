#!/usr/bin/env bash
# Builds the local base image (Debian bookworm, minimal) that the Foldwise images start from, for
# machines without Docker Hub: debootstrap from a Debian mirror, then `docker import`.
#   docker/build-base.sh [TAG]       default foldwise-base:bookworm; an existing image is kept
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), REBUILD=1 to build it again.
# Needs root (debootstrap) and `apt-get install debootstrap`.
set -euo pipefail
tag=${1:-foldwise-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [[ -z ${REBUILD:-} ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists (REBUILD=1 builds it again)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "error: needs debootstrap: apt-get install debootstrap" >&2; exit 2; }

rootfs=$(mktemp -d /var/tmp/foldwise-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror"

# Security and point-release updates too, as Debian's own images have them.
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As in Debian's images: no recommended packages, no apt caches left in layers.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    > "$rootfs/etc/apt/apt.conf.d/90foldwise-no-recommends"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/tmp/*

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    --message "debootstrap bookworm from $mirror" - "$tag"
echo "built base image $tag"
