# Sourced by the scripts: a .venv with the project installed, refreshed when pyproject.toml
# or the C extension's source changes. Usage: source scripts/_bootstrap.sh [EXTRAS]   (e.g. "dev")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${1:-}"

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "livecommerce needs Python 3.11 or newer on PATH" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "» creating $VENV" >&2
  "$(find_python)" -m venv "$VENV"
fi

# Debian packages the project needs: install when missing (root, or passwordless sudo).
ensure_apt() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "» installing ${missing[*]} from Debian's packages" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

# The package, with its C extension (transport/_sendfan.c: the send thread) when a C
# compiler is there or can be installed; without one every write stays inline.
_hash="$(cat "$ROOT/pyproject.toml" "$ROOT"/livecommerce/transport/*.c | sha256sum | cut -c1-16)"
_stamp="$VENV/.installed-${_hash}-${EXTRAS:-base}"
if [ ! -f "$_stamp" ]; then
  ensure_apt cc:gcc || echo "» no C compiler: the send thread is off, every write is inline" >&2
  echo "» installing livecommerce${EXTRAS:+[$EXTRAS]} into .venv" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
  touch "$_stamp"
fi
export PATH="$VENV/bin:$PATH"

# PostgreSQL server binaries (Debian keeps them off PATH, in /usr/lib/postgresql/<v>/bin):
# the suite runs its persistence tests on a throwaway server it starts itself.
ensure_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && return 0
  command -v pg_ctl >/dev/null 2>&1 && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "» installing postgresql from Debian's packages" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
}

# Front-end libraries for the pages: pinned in package.json/package-lock.json, installed
# with `npm ci`, copied into static/vendor/ (git ignores it). No CDN, nothing hand-written.
VENDOR_FILES=(
  "socket.io-client/dist/socket.io.min.js"
  "danmaku/dist/danmaku.min.js"
  "hls.js/dist/hls.min.js"
  "echarts/dist/echarts.min.js"
  "echarts-wordcloud/dist/echarts-wordcloud.min.js"
)
ensure_vendor() {
  local lock_hash stamp
  lock_hash="$(sha256sum "$ROOT/package-lock.json" | cut -c1-16)"
  stamp="$ROOT/static/vendor/.installed-$lock_hash"
  [ -f "$stamp" ] && return 0
  command -v npm >/dev/null 2>&1 || ensure_apt npm:npm
  echo "» installing the pages' libraries (npm ci)" >&2
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
  rm -rf "$ROOT/static/vendor" && mkdir -p "$ROOT/static/vendor"
  for file in "${VENDOR_FILES[@]}"; do cp "$ROOT/node_modules/$file" "$ROOT/static/vendor/"; done
  touch "$stamp"
}

# CJK fonts, so Chinese renders in the browser tests and screenshots.
ensure_fonts_cjk() {
  fc-list 2>/dev/null | grep -qi "noto.*cjk" && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  echo "» installing fonts-noto-cjk from Debian's packages" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fonts-noto-cjk >&2
}
