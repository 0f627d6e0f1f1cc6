#!/usr/bin/env bash
# Remove what packaging/install.sh installed. The configuration (/etc/nwp500d, with the password) and the recorded
# drops (/var/lib/nwp500) stay unless --purge: they are the admin's data, and a reinstall picks them up again.
# The nwp500 system user always stays: files elsewhere may still belong to its uid, and a reused uid would inherit
# them (remove it by hand with userdel if wanted).
#
# --root DIR (or DESTDIR=DIR) removes from a tree staged with install.sh --root; systemctl is never called then.
set -euo pipefail

readonly OPT_DIR=/opt/nwp500d
readonly UNIT_DIR=/usr/local/lib/systemd/system
readonly UNITS=(nwp500d.service nwp500d@.service)
readonly SYSUSERS_FILE=/usr/lib/sysusers.d/nwp500d.conf
readonly CATALOG_FILE=/usr/lib/systemd/catalog/nwp500d.catalog
readonly MAN_FILE=/usr/local/share/man/man8/nwp500d.8
readonly BIN_LINK=/usr/local/bin/nwp500d
readonly CONF_DIR=/etc/nwp500d
readonly STATE_DIR=/var/lib/nwp500
readonly SERVICE_USER=nwp500

root=${DESTDIR:-}
purge=0

usage() {
    cat <<EOF
usage: uninstall.sh [--root DIR] [--purge]

  --root DIR   remove from below DIR instead of / (also: DESTDIR=DIR); never calls systemctl
  --purge      also delete $CONF_DIR (configuration, password) and $STATE_DIR (recorded drops)
EOF
}

die() { printf 'uninstall.sh: %s\n' "$1" >&2; exit "${2:-1}"; }
step() { printf '==> %s\n' "$*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory" 64; root=$2; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        --purge) purge=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" 64 ;;
    esac
done

if [ -n "$root" ]; then
    root=$(realpath -m -- "$root")
    [ "$root" = / ] && root=""
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo make uninstall), or name a staged tree with --root DIR" 77
fi

live=0
[ -z "$root" ] && [ -d /run/systemd/system ] && live=1

if [ "$live" -eq 1 ]; then
    step "stopping and disabling nwp500d and its instances"
    mapfile -t loaded < <(systemctl list-units --all --plain --no-legend 'nwp500d.service' 'nwp500d@*.service' \
        | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /\.service$/) { print $i; break } }')
    if [ "${#loaded[@]}" -gt 0 ]; then
        systemctl disable --now "${loaded[@]}" || true
    fi
fi

# Enablement links (multi-user.target.wants/…) of the unit and of instances that were never loaded; systemctl
# disable already removed the others. Only links into our unit directory are touched.
step "enablement links"
if [ -d "$root/etc/systemd/system" ]; then
    while IFS= read -r -d '' link; do
        case $(readlink -- "$link") in
            "$UNIT_DIR"/nwp500d.service | "$UNIT_DIR"/nwp500d@.service) rm -f -- "$link" ;;
        esac
    done < <(find "$root/etc/systemd/system" -mindepth 2 -maxdepth 2 -type l \
        \( -name 'nwp500d.service' -o -name 'nwp500d@*.service' \) -print0)
fi

step "program, units, user declaration, catalog, man page"
for unit in "${UNITS[@]}"; do
    rm -f -- "$root$UNIT_DIR/$unit"
done
rm -f -- "$root$BIN_LINK" "$root$SYSUSERS_FILE" "$root$MAN_FILE" "$root$CATALOG_FILE"
rm -rf -- "$root$OPT_DIR"
if command -v journalctl >/dev/null && [ -d "$root/var/lib/systemd/catalog" ]; then
    journalctl ${root:+"--root=$root"} --update-catalog
fi

if [ "$purge" -eq 1 ]; then
    step "purging $CONF_DIR, $STATE_DIR and local drop-ins"
    rm -rf -- "$root$CONF_DIR" "$root$STATE_DIR" "$root/etc/systemd/system/nwp500d.service.d"
    if [ -d "$root/etc/systemd/system" ]; then
        find "$root/etc/systemd/system" -maxdepth 1 -type d -name 'nwp500d@*.service.d' -exec rm -rf -- {} +
    fi
else
    step "kept $CONF_DIR and $STATE_DIR (uninstall.sh --purge deletes them)"
fi

if [ "$live" -eq 1 ]; then
    systemctl daemon-reload
    systemctl reset-failed 'nwp500d.service' 'nwp500d@*.service' 2>/dev/null || true
fi
echo "nwp500d removed; the $SERVICE_USER system user was kept."
