#!/bin/sh
# Removes rvm-agent installed by install.sh (also installed as
# /usr/share/rvm-agent/uninstall.sh).
#
#   sudo ./uninstall.sh           stop and disable the service; remove the binary, the unit
#                                 and the polkit rule; keep /etc/rvm-agent (identity, config)
#                                 and /var/lib/rvm-agent (unsent records)
#   sudo ./uninstall.sh --purge   also remove /etc/rvm-agent, /var/lib/rvm-agent, the manifest
#                                 and the rvm-agent user
#   --package-prerm               what the .deb's prerm runs: stop and disable the service
#                                 and remove the polkit rule (dpkg removes its own files)
#
# DESTDIR (default /) as for install.sh: with another root, nothing is stopped and no user is
# removed. What to remove comes from DESTDIR/usr/share/rvm-agent/install-manifest.
set -eu

AGENT_USER=rvm-agent
say() { printf 'uninstall.sh: %s\n' "$*"; }
die() {
    printf 'uninstall.sh: error: %s\n' "$*" >&2
    exit 1
}

PURGE=0
PRERM=0
while [ $# -gt 0 ]; do
    case $1 in
    --purge) PURGE=1; shift ;;
    --package-prerm) PRERM=1; shift ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done

DESTDIR=${DESTDIR:-/}
case $DESTDIR in
/) ROOT= ; REAL=1 ;;
/*) ROOT=${DESTDIR%/}; REAL=0 ;;
*) die "DESTDIR must be an absolute path (got $DESTDIR)" ;;
esac
if [ "$REAL" = 1 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or set DESTDIR"
fi

if [ "$REAL" = 1 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now rvm-agent.service 2>/dev/null || true
fi

POLKIT_FILES="/etc/polkit-1/rules.d/50-rvm-agent.rules /etc/polkit-1/localauthority/50-local.d/50-rvm-agent.pkla"
if [ "$PRERM" = 1 ]; then
    for f in $POLKIT_FILES; do rm -f "$ROOT$f"; done
    say "service stopped, polkit rule removed"
    exit 0
fi

MANIFEST=$ROOT/usr/share/rvm-agent/install-manifest
# kept without --purge: the machine's identity, its config and unsent records
kept() {
    case $1 in
    /etc/rvm-agent | /etc/rvm-agent/* | /var/lib/rvm-agent | /var/lib/rvm-agent/* | /etc/default/rvm-agent) return 0 ;;
    /usr/share/rvm-agent | /usr/share/rvm-agent/install-manifest) return 0 ;;
    esac
    return 1
}

if [ -f "$MANIFEST" ]; then
    files=$(awk '!/^#/ && $4 == "file" { print $1 }' "$MANIFEST")
    dirs=$(awk '!/^#/ && $4 == "dir" { print $1 }' "$MANIFEST" | sort -r)
else
    say "no manifest at $MANIFEST: removing the default paths"
    files="/usr/bin/rvm-agent /lib/systemd/system/rvm-agent.service /usr/share/rvm-agent/uninstall.sh /usr/share/rvm-agent/agent.toml.in /usr/share/doc/rvm-agent/install.md $POLKIT_FILES"
    dirs="/usr/share/rvm-agent"
fi
for f in $files $POLKIT_FILES; do
    if [ "$PURGE" = 1 ] || ! kept "$f"; then
        rm -f "$ROOT$f"
    fi
done
rmdir "$ROOT/usr/share/doc/rvm-agent" 2>/dev/null || true
if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT/etc/rvm-agent" "$ROOT/var/lib/rvm-agent" "$ROOT/usr/share/rvm-agent"
    rm -f "$ROOT/etc/default/rvm-agent"
fi
for d in $dirs; do
    if [ "$PURGE" = 1 ] || ! kept "$d"; then
        rmdir "$ROOT$d" 2>/dev/null || true
    fi
done

if [ "$REAL" = 1 ]; then
    if [ "$PURGE" = 1 ] && getent passwd "$AGENT_USER" >/dev/null 2>&1; then
        userdel "$AGENT_USER" || say "could not remove user $AGENT_USER"
    fi
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
fi
if [ "$PURGE" = 1 ]; then
    say "removed rvm-agent, its configuration, identity and data"
else
    say "removed rvm-agent; kept /etc/rvm-agent and /var/lib/rvm-agent (--purge removes them)"
fi
