#!/usr/bin/env bash
# Install nwp500d as a systemd service: a private venv in /opt/nwp500d, the units, the nwp500 system user, the
# journal catalog, the man page and an example configuration. Run as root from a checkout (`make install`).
#
# --root DIR (or DESTDIR=DIR) installs into DIR instead of /: users and the catalog database are created inside
# DIR, and systemctl is never called, so a test or a packager can stage a complete tree without touching the host.
# Re-running it upgrades in place and never overwrites an existing configuration.
set -euo pipefail

readonly VENV=/opt/nwp500d/venv
readonly UNIT_DIR=/usr/local/lib/systemd/system  # /etc/systemd/system stays the admin's, for drop-ins
readonly SYSUSERS_DIR=/usr/lib/sysusers.d
readonly CATALOG_DIR=/usr/lib/systemd/catalog
readonly MAN_DIR=/usr/local/share/man/man8
readonly BIN_LINK=/usr/local/bin/nwp500d
readonly CONF_DIR=/etc/nwp500d
readonly SERVICE_USER=nwp500

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(dirname "$here")
root=${DESTDIR:-}
# The distribution's interpreter: a pyenv or ~/.local Python would sit under /root or /home, which the unit's
# ProtectHome=yes hides from the service.
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x /usr/bin/python3 ]; then python=/usr/bin/python3; else python=python3; fi
fi
make_venv=1

usage() {
    cat <<EOF
usage: install.sh [--root DIR] [--python PYTHON] [--skip-venv]

  --root DIR        install below DIR instead of / (also: DESTDIR=DIR); never calls systemctl
  --python PYTHON   interpreter for the venv (default: /usr/bin/python3; 3.11 or newer, not under /home)
  --skip-venv       install only the files around the program (the caller provides $VENV)
EOF
}

die() { printf 'install.sh: %s\n' "$1" >&2; exit "${2:-1}"; }
step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory" 64; root=$2; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter" 64; python=$2; shift 2 ;;
        --python=*) python=${1#--python=}; shift ;;
        --skip-venv) make_venv=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" 64 ;;
    esac
done

if [ -n "$root" ]; then
    root=$(realpath -m -- "$root")
    [ "$root" = / ] && root=""
fi
is_root=0
[ "$(id -u)" -eq 0 ] && is_root=1
if [ -z "$root" ] && [ "$is_root" -eq 0 ]; then
    die "run as root (sudo make install), or stage the files with --root DIR" 77
fi

# The numeric gid as the target system sees it: a staged root has its own /etc/group.
group_id() {
    if [ -z "$root" ]; then
        getent group "$1" | cut -d: -f3
    elif [ -r "$root/etc/group" ]; then
        awk -F: -v name="$1" '$1 == name { print $3; exit }' "$root/etc/group"
    fi
}

# Ownership only as root; an unprivileged staged install keeps the caller's ownership and says so once.
chown_warned=0
give() {
    local owner=$1 path=$2
    if [ "$is_root" -eq 1 ]; then
        chown "$owner" "$path"
    elif [ "$chown_warned" -eq 0 ]; then
        note "not root: ownership left to the caller (the service expects root:$SERVICE_USER on $CONF_DIR)"
        chown_warned=1
    fi
}

if [ "$make_venv" -eq 1 ]; then
    step "Python environment $VENV"
    "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
        || die "nwp500d needs Python 3.11 or newer; $python is $("$python" -V 2>&1 || echo missing)" 69
    base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.base_prefix))')
    case $base/ in
        /home/* | /root/* | /run/user/*)
            die "$python lives in $base, hidden from the service by ProtectHome=yes; use --python /usr/bin/python3" \
                78 ;;
    esac
    "$python" -m venv "$root$VENV" \
        || die "$python -m venv failed (on Debian: apt-get install python3-venv)" 69
    # Build from a copy: pip's in-tree build would leave root-owned build/ and *.egg-info in the checkout.
    build=$(mktemp -d)
    trap 'rm -rf -- "$build"' EXIT
    tar -C "$src" --exclude-vcs --exclude=./.venv --exclude=./build --exclude='./*.egg-info' \
        --exclude='./.*_cache' --exclude='./nwp500d-demo' --exclude='./nwp500d-sim' --exclude='__pycache__' \
        -cf - . | tar -C "$build" -xf -
    # Not editable: the service must not depend on this checkout staying where it is.
    "$root$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location "$build"
    if [ -n "$root" ]; then
        # venv and pip wrote the staging path into scripts and activate files; the tree is meant to live at /.
        grep -rlIF --null -- "$root$VENV" "$root$VENV/bin" "$root$VENV/pyvenv.cfg" \
            | xargs -0 --no-run-if-empty sed -i "s#$root$VENV#$VENV#g"
    fi
    note "$("$root$VENV/bin/python" -m nwp500d --version)"
else
    step "Python environment: skipped (--skip-venv; $VENV must be provided)"
fi
install -d -m 0755 "$root$(dirname "$BIN_LINK")"
ln -sfn "$VENV/bin/nwp500d" "$root$BIN_LINK"

step "systemd units in $UNIT_DIR"
install -D -m 0644 "$here/systemd/nwp500d.service" "$root$UNIT_DIR/nwp500d.service"
install -D -m 0644 "$here/systemd/nwp500d@.service" "$root$UNIT_DIR/nwp500d@.service"

step "service user $SERVICE_USER ($SYSUSERS_DIR/nwp500d.conf)"
install -D -m 0644 "$here/sysusers.d/nwp500d.conf" "$root$SYSUSERS_DIR/nwp500d.conf"
if command -v systemd-sysusers >/dev/null; then
    install -d -m 0755 "$root/etc"
    # A bare name is looked up in the (root's) sysusers.d directories, so --root reads the file just installed.
    if ! systemd-sysusers ${root:+"--root=$root"} nwp500d.conf; then
        [ "$is_root" -eq 0 ] || die "systemd-sysusers failed"
        note "could not create the user without root; run systemd-sysusers on the target"
    fi
else
    note "systemd-sysusers not found: create the user with: systemd-sysusers nwp500d.conf"
fi

step "journal catalog $CATALOG_DIR/nwp500d.catalog"
install -D -m 0644 "$here/catalog/nwp500d.catalog" "$root$CATALOG_DIR/nwp500d.catalog"
if command -v journalctl >/dev/null; then
    journalctl ${root:+"--root=$root"} --update-catalog
else
    note "journalctl not found: run journalctl --update-catalog on the target"
fi

step "man page $MAN_DIR/nwp500d.8"
install -D -m 0644 "$here/man/nwp500d.8" "$root$MAN_DIR/nwp500d.8"

step "configuration $CONF_DIR"
gid=$(group_id "$SERVICE_USER")
[ -n "$gid" ] || gid=0
# The service user reads its configuration through the group; systemd never chowns a ConfigurationDirectory.
install -d -m 0750 "$root$CONF_DIR"
give "0:$gid" "$root$CONF_DIR"
if [ -e "$root$CONF_DIR/nwp500d.yaml" ]; then
    note "kept the existing $CONF_DIR/nwp500d.yaml (the shipped example is etc/nwp500d/nwp500d.yaml)"
else
    install -m 0640 "$src/etc/nwp500d/nwp500d.yaml" "$root$CONF_DIR/nwp500d.yaml"
    give "0:$gid" "$root$CONF_DIR/nwp500d.yaml"
fi
password_file=$root$CONF_DIR/navien-password
if [ -e "$password_file" ] && [ -n "$(find "$password_file" -maxdepth 0 -perm /077)" ]; then
    note "warning: $CONF_DIR/navien-password is readable by others than root: chmod 600 it"
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    step "systemctl daemon-reload"
    systemctl daemon-reload
    if systemctl is-active --quiet nwp500d.service; then
        note "nwp500d is running the previous version: systemctl restart nwp500d"
    fi
elif [ -n "$root" ]; then
    step "systemctl daemon-reload: skipped (installed below $root)"
else
    step "systemctl daemon-reload: skipped (systemd is not PID 1 here)"
fi

cat <<EOF

Installed. Next:
  1. Store the NaviLink password, readable by root only:
       install -m 600 /dev/null $CONF_DIR/navien-password && editor $CONF_DIR/navien-password
  2. Set account.email in $CONF_DIR/nwp500d.yaml, then check it:
       editor $CONF_DIR/nwp500d.yaml && nwp500d check-config
  3. Start the service now and at boot, and follow it:
       systemctl enable --now nwp500d && journalctl -u nwp500d -f
EOF
