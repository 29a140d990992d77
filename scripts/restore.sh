#!/bin/sh
# Restore a Gatehouse backup made by scripts/backup.sh into a database.
#
#   scripts/restore.sh ARCHIVE [DATABASE_URL]      # or DATABASE_URL in the environment
#
# The target should be a new, empty database (createdb, or your provider's console): the restore
# runs in one transaction and stops at the first error, so it either restores everything or
# nothing. RESTORE_CLEAN=1 drops the archive's objects first (replacing an existing copy).
# When ARCHIVE.sha256 exists the archive is verified against it before anything is touched.
set -eu

file=${1:-}
url=${2:-${DATABASE_URL:-}}
if [ -z "$file" ] || [ -z "$url" ]; then
    echo "usage: restore.sh ARCHIVE [DATABASE_URL]  (or DATABASE_URL in the environment)" >&2
    exit 2
fi
if [ ! -f "$file" ]; then
    echo "restore.sh: no such archive: $file" >&2
    exit 2
fi
url=$(printf '%s' "$url" | sed -E 's#^(postgres(ql)?)\+[a-z0-9_]+://#\1://#')

if [ -f "$file.sha256" ]; then
    (cd "$(dirname "$file")" && sha256sum -c "$(basename "$file").sha256" >/dev/null) || {
        echo "restore.sh: checksum mismatch for $file" >&2
        exit 1
    }
fi

set -- --exit-on-error --single-transaction --no-owner --no-privileges --dbname="$url"
if [ "${RESTORE_CLEAN:-0}" = 1 ]; then
    set -- "$@" --clean --if-exists
fi
pg_restore "$@" "$file"
echo "restore.sh: restored $file" >&2
