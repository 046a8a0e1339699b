# Shared helpers for scripts/services, scripts/run and scripts/test.
# Source it; do not execute it. Expects the caller to use `set -euo pipefail`.

# REPO = the folder that contains scripts/ (works from any cwd, any clone location).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
LOCAL="$REPO/.local"

# Unprivileged user that runs PostgreSQL and Elasticsearch (both refuse root).
SVC_USER=sightline

# Ports can be overridden (e.g. to run a second checkout side by side).
PG_HOST=127.0.0.1
PG_PORT="${SIGHTLINE_PG_PORT:-5433}"
ES_HOST=127.0.0.1
ES_PORT="${SIGHTLINE_ES_PORT:-9200}"
ES_TRANSPORT_PORT="${SIGHTLINE_ES_TRANSPORT_PORT:-9300}"
# NATS: three nodes on loopback; node i (1..3) uses <base>+i-1 of each.
NATS_HOST=127.0.0.1
NATS_PORT="${SIGHTLINE_NATS_PORT:-4222}"
NATS_CLUSTER_PORT="${SIGHTLINE_NATS_CLUSTER_PORT:-6222}"
NATS_MONITOR_PORT="${SIGHTLINE_NATS_MONITOR_PORT:-8222}"

# Jaeger (traces): OTLP over HTTP in (not 4318, a collector's usual port,
# to stay clear of one), its query HTTP API (the UI's port), its query gRPC.
JAEGER_HOST=127.0.0.1
JAEGER_OTLP_PORT="${SIGHTLINE_JAEGER_OTLP_PORT:-14318}"
JAEGER_UI_PORT="${SIGHTLINE_JAEGER_UI_PORT:-16686}"
JAEGER_GRPC_PORT="${SIGHTLINE_JAEGER_GRPC_PORT:-16685}"

: "${DATABASE_URL:=postgres://sightline@${PG_HOST}:${PG_PORT}/sightline}"
: "${ELASTICSEARCH_URL:=http://${ES_HOST}:${ES_PORT}}"
: "${NATS_URL:=nats://${NATS_HOST}:${NATS_PORT},nats://${NATS_HOST}:$((NATS_PORT + 1)),nats://${NATS_HOST}:$((NATS_PORT + 2))}"

log()  { printf '%s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root, whether or not we already are root.
as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $* (run as root or install sudo)"
    fi
}

# apt-get install packages, running `apt-get update` at most once per process.
_APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    export DEBIAN_FRONTEND=noninteractive
    if [[ $_APT_UPDATED -eq 0 ]]; then
        log "apt: updating package lists"
        as_root apt-get -qq -o DPkg::Lock::Timeout=300 update >&2 || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    log "apt: installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq -y \
        -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300 --no-install-recommends install "$@" >&2 \
        || die "apt-get install $* failed"
}

# Install the given apt packages if the given command is missing.
need_cmd() { # need_cmd <command> <apt-package>...
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 || apt_install "$@"
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' still missing after installing $*"
}

# Create the unprivileged service user if missing.
ensure_svc_user() {
    id -u "$SVC_USER" >/dev/null 2>&1 && return 0
    log "creating system user '$SVC_USER'"
    as_root useradd --system --create-home --home-dir "/var/lib/$SVC_USER" \
        --shell /usr/sbin/nologin --user-group "$SVC_USER" \
        || die "could not create user '$SVC_USER'"
}

# Run a command as the service user, from a directory it can enter.
# fd 9 (the scripts/services lock) is closed so that daemons started here do
# not inherit it and hold the lock forever.
as_svc() {
    (cd "$LOCAL" && as_root runuser -u "$SVC_USER" -- "$@" 9>&-)
}

# Make sure the service user can traverse every directory down to $REPO.
# On CI (CI=true) or with SIGHTLINE_GRANT_TRAVERSE=1, grant o+x (traverse
# only, no listing) to the blocking directories; otherwise fail clearly.
ensure_repo_traversable() {
    as_root runuser -u "$SVC_USER" -- test -x "$REPO" 2>/dev/null && return 0
    local d="" part
    local -a parts
    IFS=/ read -r -a parts <<<"${REPO#/}"
    for part in "" "${parts[@]}"; do
        d="${d%/}/$part"
        as_root runuser -u "$SVC_USER" -- test -x "$d" 2>/dev/null && continue
        if [[ "${CI:-}" == true || "${SIGHTLINE_GRANT_TRAVERSE:-}" == 1 ]]; then
            log "granting traverse permission (o+x) on $d so user '$SVC_USER' can reach the repo"
            as_root chmod o+x "$d"
        else
            die "user '$SVC_USER' cannot enter $d (needed to reach $REPO); fix with: chmod o+x $d (or rerun with SIGHTLINE_GRANT_TRAVERSE=1), or clone the repo elsewhere"
        fi
    done
    as_root runuser -u "$SVC_USER" -- test -x "$REPO" \
        || die "user '$SVC_USER' still cannot reach $REPO"
}

# Create a directory under .local owned by the service user.
svc_dir() { # svc_dir <dir> [mode]
    mkdir -p "$1"
    chown "$SVC_USER:$SVC_USER" "$1"
    [[ -n "${2:-}" ]] && chmod "$2" "$1"
    return 0
}

# Highest installed Debian PostgreSQL bin dir (/usr/lib/postgresql/<major>/bin), or "".
pg_bindir() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
        if [[ -z "$best" ]] || [[ "$(basename "$(dirname "$d")")" -gt "$(basename "$(dirname "$best")")" ]]; then
            best="$d"
        fi
    done
    printf '%s' "$best"
}

# Ensure the Rust toolchain exists.
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 \
        || die "cargo not found; install the Rust toolchain (https://rustup.rs) and retry"
}
