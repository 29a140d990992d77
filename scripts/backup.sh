#!/bin/sh
# Back up the Gatehouse database with pg_dump (custom format: compressed, restorable selectively
# and in parallel with pg_restore).
#
#   scripts/backup.sh [DATABASE_URL]          # or DATABASE_URL in the environment
#
# Environment:
#   DATABASE_URL  postgresql://user:pass@host:port/db (a SQLAlchemy "+driver" suffix is accepted)
#   BACKUP_DIR    where archives go (default ./backups); created if missing
#   BACKUP_FILE   exact archive path instead of BACKUP_DIR/gatehouse-<UTC timestamp>.dump
#   BACKUP_KEEP   keep only the newest N archives in BACKUP_DIR (default 0 = keep all)
#
# The archive is written under a temporary name, checked with `pg_restore --list`, then renamed, so
# a half-written file never looks like a backup; a SHA-256 file is written beside it. The path of
# the archive is the last line printed. POSIX sh: runs in the official postgres images (busybox).
# Use a pg_dump of at least the server's major version.
set -eu

url=${1:-${DATABASE_URL:-}}
if [ -z "$url" ]; then
    echo "backup.sh: set DATABASE_URL or pass the database URL as the first argument" >&2
    exit 2
fi
# postgresql+psycopg://... (SQLAlchemy form) -> postgresql://... (libpq form)
url=$(printf '%s' "$url" | sed -E 's#^(postgres(ql)?)\+[a-z0-9_]+://#\1://#')

dir=${BACKUP_DIR:-./backups}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
file=${BACKUP_FILE:-$dir/gatehouse-$stamp.dump}
keep=${BACKUP_KEEP:-0}
mkdir -p "$(dirname "$file")"
partial="$file.partial"
trap 'rm -f "$partial"' EXIT INT TERM

pg_dump --format=custom --compress=6 --no-owner --no-privileges --quote-all-identifiers \
    --file="$partial" --dbname="$url"
pg_restore --list "$partial" >/dev/null
mv "$partial" "$file"
(cd "$(dirname "$file")" && sha256sum "$(basename "$file")" >"$(basename "$file").sha256")

if [ "$keep" -gt 0 ] 2>/dev/null && [ -z "${BACKUP_FILE:-}" ]; then
    # Timestamped names sort chronologically; drop all but the newest $keep.
    ls -1 "$dir"/gatehouse-*.dump 2>/dev/null | sort -r | tail -n +"$((keep + 1))" |
        while IFS= read -r old; do
            rm -f "$old" "$old.sha256"
        done
fi

size=$(wc -c <"$file" | tr -d ' ')
echo "backup.sh: wrote $file ($size bytes)" >&2
echo "$file"
