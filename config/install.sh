#!/bin/sh
# Installs rvm-agent on a Jetson (or into an image root given by DESTDIR).
#
#   sudo ./install.sh --bundle rvm0042.tar --binary ./rvm-agent \
#        --broker fleet.example.com:8883 --site store-12
#
# Options:
#   --bundle FILE|DIR   provisioning bundle from `fleetctl certs bundle ID --out ID.tar`:
#                       device.pem, device.key, ca.pem, command-signing.pub, provision.env
#   --binary FILE       the rvm-agent binary to install as /usr/bin/rvm-agent
#   --broker HOST:PORT  the fleet's MQTT broker (default: BROKER of provision.env)
#   --site NAME         the machine's site (default: SITE of provision.env; may be empty)
#   --units "A B"       systemd units the agent may restart (default: vision.service); the
#                       same list must be in agent.toml's health.systemd_units
#   --polkit MODE       auto (default), rules (polkit >= 0.106, JavaScript rule limited to
#                       --units), pkla (polkit 0.105 of Ubuntu 20.04/22.04: JetPack 5 and 6;
#                       cannot limit units) or none
#   --force-config      replace an existing /etc/rvm-agent/agent.toml (else it is kept and
#                       the new one written next to it as agent.toml.new)
#   --no-start          do not enable and (re)start the service
#   --package-postinst  what the .deb's postinst runs: user, directories, polkit rule; the
#                       package itself ships the binary and the unit
#
# DESTDIR (default /): the root to install into. With a DESTDIR other than /, no user is
# created, nothing is chowned and systemd is not touched: the intended owners are recorded in
# DESTDIR/usr/share/rvm-agent/install-manifest (path mode owner:group type), for an image
# build to apply. The manifest is kept up to date on every run; uninstall.sh reads it.
set -eu

AGENT_USER=rvm-agent
AGENT_GROUP=rvm-agent
SCRIPT_DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)

say() { printf 'install.sh: %s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

BUNDLE=
BINARY=
BROKER=
SITE=
SITE_SET=0
UNITS=vision.service
POLKIT=auto
FORCE_CONFIG=0
START=1
POSTINST=0
while [ $# -gt 0 ]; do
    case $1 in
    --bundle) [ $# -ge 2 ] || die "--bundle needs a file or directory"; BUNDLE=$2; shift 2 ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a file"; BINARY=$2; shift 2 ;;
    --broker) [ $# -ge 2 ] || die "--broker needs HOST:PORT"; BROKER=$2; shift 2 ;;
    --site) [ $# -ge 2 ] || die "--site needs a name"; SITE=$2; SITE_SET=1; shift 2 ;;
    --units) [ $# -ge 2 ] || die "--units needs a list"; UNITS=$2; shift 2 ;;
    --polkit) [ $# -ge 2 ] || die "--polkit needs auto, rules, pkla or none"; POLKIT=$2; shift 2 ;;
    --force-config) FORCE_CONFIG=1; shift ;;
    --no-start) START=0; shift ;;
    --package-postinst) POSTINST=1; shift ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
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
    die "run as root (sudo), or set DESTDIR to install into a directory"
fi
case $POLKIT in
auto | rules | pkla | none) ;;
*) die "--polkit $POLKIT: one of auto, rules, pkla, none" ;;
esac
for u in $UNITS; do
    case $u in
    *[!A-Za-z0-9@:._-]* | "") die "--units: $u is not a unit name" ;;
    *.service | *.socket | *.timer | *.target | *.mount | *.path) ;;
    *) die "--units: $u has no unit type suffix (.service, ...)" ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is needed ($2)"; }
need sed "template substitution"
need tar "reading the bundle"

# --------------------------------------------------------------------------------------------
# the manifest: what was written, with the mode and owner it has (or should have, in DESTDIR)

MANIFEST_DIR=$ROOT/usr/share/rvm-agent
MANIFEST=$MANIFEST_DIR/install-manifest
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rvm-agent-install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
: >"$TMP/manifest"

# record PATH MODE OWNER:GROUP TYPE; applies mode (always) and owner (on a real install)
record() {
    chmod "$2" "$ROOT$1"
    if [ "$REAL" = 1 ]; then
        chown "$3" "$ROOT$1"
    fi
    printf '%s %s %s %s\n' "$1" "$2" "$3" "$4" >>"$TMP/manifest"
}

mkdir_rec() { # PATH MODE OWNER
    mkdir -p "$ROOT$1"
    record "$1" "$2" "$3" dir
}

# install_file SRC DEST MODE OWNER: copy to DEST.new then rename (a running binary stays valid)
install_file() {
    [ -f "$1" ] || die "$1 does not exist"
    mkdir -p "$(dirname -- "$ROOT$2")"
    cp "$1" "$ROOT$2.new"
    chmod "$3" "$ROOT$2.new"
    mv -f "$ROOT$2.new" "$ROOT$2"
    record "$2" "$3" "$4" file
}

write_manifest() {
    mkdir -p "$MANIFEST_DIR"
    record_self=/usr/share/rvm-agent/install-manifest
    printf '%s 0644 root:root file\n' "$record_self" >>"$TMP/manifest"
    # merge with an earlier manifest: the latest line per path wins, order of first sight kept
    {
        [ -f "$MANIFEST" ] && grep -v '^#' "$MANIFEST" || true
        cat "$TMP/manifest"
    } | awk '{ if (!($1 in line)) order[n++] = $1; line[$1] = $0 } END { for (i = 0; i < n; i++) print line[order[i]] }' >"$TMP/merged"
    {
        printf '# rvm-agent install manifest (install.sh): path mode owner:group type\n'
        cat "$TMP/merged"
    } >"$MANIFEST.new"
    mv -f "$MANIFEST.new" "$MANIFEST"
    chmod 0644 "$MANIFEST"
    [ "$REAL" = 1 ] && chown root:root "$MANIFEST"
    return 0
}

# --------------------------------------------------------------------------------------------
# the user

if [ "$REAL" = 1 ]; then
    if ! getent passwd "$AGENT_USER" >/dev/null 2>&1; then
        need useradd "creating the $AGENT_USER system user"
        useradd --system --user-group --home-dir /var/lib/rvm-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "RVM Fleet agent" "$AGENT_USER"
        say "created system user $AGENT_USER"
    fi
else
    say "DESTDIR=$DESTDIR: no user created, owners recorded in $MANIFEST"
fi

# --------------------------------------------------------------------------------------------
# directories

mkdir_rec /etc/rvm-agent 0750 "root:$AGENT_GROUP"
mkdir_rec /var/lib/rvm-agent 0750 "$AGENT_USER:$AGENT_GROUP"
mkdir_rec /var/lib/rvm-agent/buffer 0750 "$AGENT_USER:$AGENT_GROUP"
mkdir_rec /var/lib/rvm-agent/diagnostics 0750 "$AGENT_USER:$AGENT_GROUP"
mkdir_rec /usr/share/rvm-agent 0755 root:root

# --------------------------------------------------------------------------------------------
# binary, unit, scripts (the .deb ships these itself)

# run as /usr/share/rvm-agent/install.sh (the .deb, or an earlier install): the binary, the
# unit and the scripts are in place already
INSTALLED_COPY=0
if [ "$SCRIPT_DIR" = "$ROOT/usr/share/rvm-agent" ]; then
    INSTALLED_COPY=1
fi
if [ "$POSTINST" = 0 ] && [ "$INSTALLED_COPY" = 1 ]; then
    if [ -n "$BINARY" ]; then
        install_file "$BINARY" /usr/bin/rvm-agent 0755 root:root
    fi
    [ -x "$ROOT/usr/bin/rvm-agent" ] || die "no /usr/bin/rvm-agent: pass --binary FILE"
elif [ "$POSTINST" = 0 ]; then
    if [ -n "$BINARY" ]; then
        install_file "$BINARY" /usr/bin/rvm-agent 0755 root:root
    elif [ ! -x "$ROOT/usr/bin/rvm-agent" ]; then
        die "no /usr/bin/rvm-agent yet: pass --binary FILE"
    fi
    [ -f "$SCRIPT_DIR/rvm-agent.service" ] || die "$SCRIPT_DIR/rvm-agent.service is missing"
    install_file "$SCRIPT_DIR/rvm-agent.service" /lib/systemd/system/rvm-agent.service 0644 root:root
    [ -f "$SCRIPT_DIR/uninstall.sh" ] &&
        install_file "$SCRIPT_DIR/uninstall.sh" /usr/share/rvm-agent/uninstall.sh 0755 root:root
    [ -f "$SCRIPT_DIR/agent.toml.in" ] &&
        install_file "$SCRIPT_DIR/agent.toml.in" /usr/share/rvm-agent/agent.toml.in 0644 root:root
    for doc in "$SCRIPT_DIR/../docs/install.md" "$SCRIPT_DIR/install.md"; do
        if [ -f "$doc" ]; then
            install_file "$doc" /usr/share/doc/rvm-agent/install.md 0644 root:root
            break
        fi
    done
    if [ ! -f "$ROOT/etc/default/rvm-agent" ] && [ -f "$SCRIPT_DIR/rvm-agent.default" ]; then
        install_file "$SCRIPT_DIR/rvm-agent.default" /etc/default/rvm-agent 0644 root:root
    fi
fi

# --------------------------------------------------------------------------------------------
# the bundle: identity, trust anchors, agent.toml

env_get() { # KEY FILE: the last KEY=value line's value (the file is read, never sourced)
    sed -n "s/^$1=//p" "$2" | tail -n 1
}

if [ -n "$BUNDLE" ]; then
    if [ -d "$BUNDLE" ]; then
        SRC=$BUNDLE
    elif [ -f "$BUNDLE" ]; then
        mkdir "$TMP/bundle"
        tar -xf "$BUNDLE" -C "$TMP/bundle" || die "$BUNDLE is not a readable tar file"
        SRC=$TMP/bundle
    else
        die "--bundle $BUNDLE does not exist"
    fi
    if [ ! -f "$SRC/provision.env" ]; then
        found=
        for d in "$SRC"/*/; do
            if [ -f "${d}provision.env" ]; then
                [ -z "$found" ] || die "$BUNDLE holds more than one bundle"
                found=${d%/}
            fi
        done
        [ -n "$found" ] || die "$BUNDLE has no provision.env (made by fleetctl certs bundle?)"
        SRC=$found
    fi
    for f in device.pem device.key ca.pem command-signing.pub; do
        [ -f "$SRC/$f" ] || die "the bundle has no $f"
    done
    DEVICE_ID=$(env_get DEVICE_ID "$SRC/provision.env")
    [ -n "$BROKER" ] || BROKER=$(env_get BROKER "$SRC/provision.env")
    [ "$SITE_SET" = 1 ] || SITE=$(env_get SITE "$SRC/provision.env")

    case $DEVICE_ID in
    "" | *[!A-Za-z0-9]*) die "provision.env: DEVICE_ID \"$DEVICE_ID\" is not [A-Za-z0-9]{1,64}" ;;
    esac
    [ ${#DEVICE_ID} -le 64 ] || die "provision.env: DEVICE_ID is longer than 64 characters"
    [ -n "$BROKER" ] || die "no broker: pass --broker HOST:PORT (the bundle has no BROKER)"
    case $BROKER in
    *[!A-Za-z0-9.:\[\]-]* | *:) die "--broker \"$BROKER\" is not HOST:PORT" ;;
    *:*) ;;
    *) die "--broker \"$BROKER\" has no :PORT" ;;
    esac
    port=${BROKER##*:}
    case $port in
    "" | *[!0-9]*) die "--broker \"$BROKER\": port \"$port\" is not a number" ;;
    esac
    [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--broker \"$BROKER\": port $port is outside 1..65535"
    case $SITE in
    *[!A-Za-z0-9\ ._-]*) die "--site \"$SITE\": only letters, digits, space, '.', '_' and '-'" ;;
    esac
    [ ${#SITE} -le 64 ] || die "--site is longer than 64 characters"

    install_file "$SRC/ca.pem" /etc/rvm-agent/ca.pem 0644 root:root
    install_file "$SRC/command-signing.pub" /etc/rvm-agent/command-signing.pub 0644 root:root
    install_file "$SRC/device.pem" /etc/rvm-agent/device.pem 0644 root:root
    install_file "$SRC/device.key" /etc/rvm-agent/device.key 0600 "$AGENT_USER:$AGENT_GROUP"

    template=$SCRIPT_DIR/agent.toml.in
    [ -f "$template" ] || template=$ROOT/usr/share/rvm-agent/agent.toml.in
    [ -f "$template" ] || die "agent.toml.in not found next to install.sh"
    if [ -n "$SITE" ]; then
        sed -e "s|@DEVICE_ID@|$DEVICE_ID|g" -e "s|@BROKER@|$BROKER|g" -e "s|@SITE@|$SITE|g" \
            "$template" >"$TMP/agent.toml"
    else
        sed -e "s|@DEVICE_ID@|$DEVICE_ID|g" -e "s|@BROKER@|$BROKER|g" -e '/@SITE@/d' \
            "$template" >"$TMP/agent.toml"
    fi
    if grep -q '@[A-Z_]*@' "$TMP/agent.toml"; then
        die "$template has a placeholder install.sh does not know: $(grep -o '@[A-Z_]*@' "$TMP/agent.toml" | head -n 1)"
    fi
    conf=/etc/rvm-agent/agent.toml
    if [ -f "$ROOT$conf" ] && [ "$FORCE_CONFIG" = 0 ] && ! cmp -s "$TMP/agent.toml" "$ROOT$conf"; then
        old_id=$(sed -n 's/^device_id = "\(.*\)"$/\1/p' "$ROOT$conf" | head -n 1)
        if [ -n "$old_id" ] && [ "$old_id" != "$DEVICE_ID" ]; then
            die "$conf is for $old_id, the bundle for $DEVICE_ID: pass --force-config to replace it"
        fi
        install_file "$TMP/agent.toml" "$conf.new" 0640 "root:$AGENT_GROUP"
        say "kept $conf (changed locally); the new one is $conf.new"
    else
        install_file "$TMP/agent.toml" "$conf" 0640 "root:$AGENT_GROUP"
    fi
    say "provisioned $DEVICE_ID (broker $BROKER${SITE:+, site $SITE})"
elif [ "$POSTINST" = 0 ] && [ ! -f "$ROOT/etc/rvm-agent/agent.toml" ]; then
    say "no --bundle and no /etc/rvm-agent/agent.toml yet: provision later with --bundle"
fi

# --------------------------------------------------------------------------------------------
# polkit: restart exactly --units, and reboot

if [ "$POLKIT" = auto ]; then
    POLKIT=rules
    if [ "$REAL" = 1 ] && command -v pkaction >/dev/null 2>&1; then
        case $(pkaction --version 2>/dev/null) in
        *0.105*) POLKIT=pkla ;;
        esac
    fi
fi
rules=/etc/polkit-1/rules.d/50-rvm-agent.rules
pkla=/etc/polkit-1/localauthority/50-local.d/50-rvm-agent.pkla
case $POLKIT in
rules)
    js_units=
    for u in $UNITS; do js_units="$js_units${js_units:+, }\"$u\""; done
    cat >"$TMP/rules" <<EOF
// rvm-agent (install.sh --units "$UNITS"): the agent may restart exactly these units and
// reboot the machine; nothing else. Keep the list equal to health.systemd_units.
polkit.addRule(function (action, subject) {
    if (subject.user !== "$AGENT_USER") {
        return polkit.Result.NOT_HANDLED;
    }
    var units = [$js_units];
    if (action.id === "org.freedesktop.systemd1.manage-units") {
        var verb = action.lookup("verb");
        if ((verb === "restart" || verb === "try-restart") && units.indexOf(action.lookup("unit")) >= 0) {
            return polkit.Result.YES;
        }
        return polkit.Result.NOT_HANDLED;
    }
    if (action.id === "org.freedesktop.login1.reboot" ||
        action.id === "org.freedesktop.login1.reboot-multiple-sessions" ||
        action.id === "org.freedesktop.login1.reboot-ignore-inhibit") {
        return polkit.Result.YES;
    }
    return polkit.Result.NOT_HANDLED;
});
EOF
    install_file "$TMP/rules" "$rules" 0644 root:root
    ;;
pkla)
    cat >"$TMP/pkla" <<EOF
# rvm-agent: polkit 0.105 cannot limit this to units; the agent's own allow-list
# (health.systemd_units, signed commands) is the limit. See docs/install.md.
[rvm-agent: restart units and reboot]
Identity=unix-user:$AGENT_USER
Action=org.freedesktop.systemd1.manage-units;org.freedesktop.login1.reboot;org.freedesktop.login1.reboot-multiple-sessions;org.freedesktop.login1.reboot-ignore-inhibit
ResultAny=yes
ResultInactive=yes
ResultActive=yes
EOF
    install_file "$TMP/pkla" "$pkla" 0644 root:root
    ;;
none) say "no polkit rule: the agent cannot restart units or reboot" ;;
esac

write_manifest

# --------------------------------------------------------------------------------------------
# systemd

if [ "$REAL" = 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ -f /etc/rvm-agent/agent.toml ]; then
        /usr/bin/rvm-agent check-config --config /etc/rvm-agent/agent.toml ||
            die "/etc/rvm-agent/agent.toml does not validate (see above)"
        if [ "$POSTINST" = 1 ]; then
            systemctl try-restart rvm-agent.service
        elif [ "$START" = 1 ]; then
            systemctl enable rvm-agent.service
            systemctl restart rvm-agent.service
            say "rvm-agent is running: journalctl -u rvm-agent -f"
        fi
    fi
elif [ "$REAL" = 1 ]; then
    say "systemd is not running here: enable rvm-agent.service once it is"
fi
say "done"
