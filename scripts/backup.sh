#!/bin/sh
# Back up the Gatehouse database with pg_dump (custom format: compressed, restorable selectively
# and in parallel with pg_restore).
#
#   scripts/backup.sh [DATABASE_URL]          # or DATABASE_URL in the environment
#
# Environment:
#   DATABASE_URL  postgresql://user:pass@host:port/db (a SQLAlchemy "+driver" suffix is accepted)
#   BACKUP_DIR    where archives go (default ./backups, ignored by git); created if missing
#   BACKUP_FILE   exact archive path instead of BACKUP_DIR/gatehouse-<UTC time>-<random>.dump;
#                 refused if it exists
#   BACKUP_KEEP   keep only the newest N archives in BACKUP_DIR (default 0 = keep all)
#
# The archive is written under a temporary name, checked with `pg_restore --list`, then linked to
# its final name (a link never replaces an existing file, so two runs in the same second cannot
# overwrite each other) and a SHA-256 file is written beside it: a half-written file never looks
# like a backup. Archives hold password hashes and tokens: keep BACKUP_DIR private (mode 0700).
#
# Each successful backup is then recorded in the table backup_runs of the database it backed up
# (psql): the API exposes the newest as gatehouse_backup_last_success_timestamp_seconds and the
# alert GatehouseBackupStale fires when it gets old. The table is part of every later dump, so a
# restored database keeps the history. A backup that cannot be recorded (no migrations yet, a
# read-only user) is still a good archive: the script warns and exits 3, after writing it.
#
# The path of the archive is the last line printed. POSIX sh: runs in the official postgres images
# (Debian or busybox). Use a pg_dump of at least the server's major version.
set -eu

url=${1:-${DATABASE_URL:-}}
if [ -z "$url" ]; then
    echo "backup.sh: set DATABASE_URL or pass the database URL as the first argument" >&2
    exit 2
fi
# postgresql+psycopg://... (SQLAlchemy form) -> postgresql://... (libpq form)
url=$(printf '%s' "$url" | sed -E 's#^(postgres(ql)?)\+[a-z0-9_]+://#\1://#')

dir=${BACKUP_DIR:-./backups}
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# Seconds are not unique (a manual run beside the CronJob, retries): a random suffix is.
suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
file=${BACKUP_FILE:-$dir/gatehouse-$stamp-$suffix.dump}
keep=${BACKUP_KEEP:-0}
if [ -e "$file" ]; then
    echo "backup.sh: $file exists; not overwriting it" >&2
    exit 2
fi
umask 077
mkdir -p "$(dirname "$file")"
partial=$(mktemp "$file.partial.XXXXXX")
trap 'rm -f "$partial"' EXIT INT TERM

pg_dump --format=custom --compress=6 --no-owner --no-privileges --quote-all-identifiers \
    --file="$partial" --dbname="$url"
pg_restore --list "$partial" >/dev/null
# ln fails when $file exists: the final name is claimed atomically, never overwritten.
ln "$partial" "$file" || {
    echo "backup.sh: $file appeared while dumping; not overwriting it" >&2
    exit 1
}
rm -f "$partial"
(cd "$(dirname "$file")" && sha256sum "$(basename "$file")" >"$(basename "$file").sha256")

if [ "$keep" -gt 0 ] 2>/dev/null && [ -z "${BACKUP_FILE:-}" ]; then
    # Names start with the UTC time, so they sort chronologically; drop all but the newest $keep.
    ls -1 "$dir"/gatehouse-*.dump 2>/dev/null | sort -r | tail -n +"$((keep + 1))" |
        while IFS= read -r old; do
            rm -f "$old" "$old.sha256"
        done
fi

size=$(wc -c <"$file" | tr -d ' ')
echo "backup.sh: wrote $file ($size bytes)" >&2

# psql variables (:'name') quote the values; they are interpolated in statements read from stdin.
if printf '%s\n' "INSERT INTO backup_runs (started_at, finished_at, archive, size_bytes)
VALUES (:'started'::timestamptz, now(), :'archive', :'size'::bigint);" |
    psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --dbname="$url" \
        --set=started="$started" --set=archive="$(basename "$file")" --set=size="$size" \
        >/dev/null; then
    status=0
else
    echo "backup.sh: WARNING: the archive is good but could not be recorded in backup_runs" \
        "(run the migrations; the database user needs INSERT on it)" >&2
    status=3
fi
echo "$file"
exit "$status"
