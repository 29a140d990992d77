#!/bin/sh
# Restore a Gatehouse backup made by scripts/backup.sh into a database.
#
#   scripts/restore.sh ARCHIVE TARGET_URL      # or RESTORE_TARGET_URL in the environment
#
# The target is always named explicitly: DATABASE_URL (the application's database, exported in
# many shells and in every Gatehouse container) is never used. It should be a new, empty database
# (createdb, or your provider's console): the restore runs in one transaction and stops at the
# first error, so it either restores everything or nothing.
#
# A target that holds any table, view, sequence or other relation outside the system schemas (an
# extension's own objects aside) is refused unless RESTORE_FORCE names it: RESTORE_FORCE=<the
# target's database name>, what `SELECT current_database()` returns there. RESTORE_CLEAN=1 then
# drops the archive's objects first, replacing the existing copy. When ARCHIVE.sha256 exists the
# archive is verified against it before anything is touched. Needs psql and a pg_restore of at
# least the archive's pg_dump version.
set -eu

usage="usage: restore.sh ARCHIVE TARGET_URL  (or RESTORE_TARGET_URL in the environment)"
file=${1:-}
url=${2:-${RESTORE_TARGET_URL:-}}
if [ -z "$file" ] || [ -z "$url" ]; then
    echo "$usage" >&2
    echo "restore.sh: name the target database explicitly; DATABASE_URL is never used" >&2
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

# The target's name and how many relations it holds outside the system schemas, in one query.
# Relations of extensions do not count: some providers create databases with extensions in them.
target=$(psql --no-psqlrc --quiet --no-align --tuples-only --field-separator=' ' \
    --set=ON_ERROR_STOP=1 --dbname="$url" --command="
    SELECT current_database(), count(c.oid)
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'e')") || {
    echo "restore.sh: cannot inspect the target database (is TARGET_URL right?)" >&2
    exit 1
}
name=${target% *}
relations=${target##* }
if [ "$relations" != 0 ] && [ "${RESTORE_FORCE:-}" != "$name" ]; then
    echo "restore.sh: refusing: the target database \"$name\" is not empty" \
        "($relations relations)." >&2
    echo "restore.sh: restore into a new database, or set RESTORE_FORCE=$name to restore into" \
        "this one (with RESTORE_CLEAN=1 to replace its objects)" >&2
    exit 3
fi

set -- --exit-on-error --single-transaction --no-owner --no-privileges --dbname="$url"
if [ "${RESTORE_CLEAN:-0}" = 1 ]; then
    set -- "$@" --clean --if-exists
fi
pg_restore "$@" "$file"
echo "restore.sh: restored $file into \"$name\"" >&2
