# Sourced by tests/run.sh and bench/run.sh: installs the Debian packages named in
# $FUSEDCNN_REQUIRED (must succeed) and $FUSEDCNN_OPTIONAL (best effort) when missing.
fusedcnn_missing() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]}"
}

fusedcnn_apt() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo="sudo"; else
      echo "need root or sudo to install: $*" >&2; return 1
    fi
  fi
  if [ -z "${FUSEDCNN_APT_UPDATED:-}" ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
    FUSEDCNN_APT_UPDATED=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

fusedcnn_install_deps() {
  local need
  need=$(fusedcnn_missing ${FUSEDCNN_REQUIRED:-})
  if [ -n "$need" ]; then
    echo "installing: $need"
    fusedcnn_apt $need || { echo "could not install $need" >&2; return 1; }
  fi
  need=$(fusedcnn_missing ${FUSEDCNN_OPTIONAL:-})
  if [ -n "$need" ]; then
    echo "installing (optional): $need"
    fusedcnn_apt $need || echo "optional packages unavailable, continuing: $need"
  fi
  return 0
}
