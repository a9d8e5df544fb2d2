# Sourced by the scripts in this folder: make sure .venv exists and holds the project as it is now.
# Re-installs only when pyproject.toml changed since the last install, so a second run is fast.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "ledgerd needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.ledgerd-installed"  # "<sha256 of pyproject.toml> <installed extras, comma-separated>"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
WANT="${LEDGERD_EXTRAS:-test}"
HAVE=""
if [ -f "$STAMP" ] && [ "$(cut -d' ' -f1 "$STAMP")" = "$HASH" ]; then HAVE="$(cut -s -d' ' -f2 "$STAMP")"; fi
MISSING=0
for extra in ${WANT//,/ }; do
  case ",$HAVE," in *",$extra,"*) ;; *) MISSING=1 ;; esac
done
if [ "$MISSING" = 1 ]; then
  # Install the union, so that scripts wanting different extras do not undo each other.
  EXTRAS="$( (echo "${WANT//,/$'\n'}"; echo "${HAVE//,/$'\n'}") | grep -v '^$' | sort -u | paste -sd, -)"
  echo "installing ledgerd and its dependencies into $VENV (log: $VENV/install.log)" >&2
  # pip and the build backend are chatty (setuptools warns about every editable install of a flat
  # layout); their output goes to the log, and only to the terminal when the install fails.
  if ! { "$VENV/bin/python" -m pip install --upgrade pip \
         && "$VENV/bin/python" -m pip install -e "$ROOT[$EXTRAS]"; } >"$VENV/install.log" 2>&1; then
    tail -25 "$VENV/install.log" >&2
    echo "installing into $VENV failed; the whole log is $VENV/install.log" >&2
    exit 1
  fi
  echo "$HASH $EXTRAS" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
