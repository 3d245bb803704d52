# Puts the bootstrap's venv and the built workspace on this shell:  source scripts/env.sh
# (bash; run `make setup` or scripts/bootstrap.sh first).
_scrap_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_scrap_venv=${SCRAP_VENV:-$(readlink -f "$_scrap_root/.venv")}
_scrap_ws=${SCRAP_WS:-$_scrap_root/.ws}
if [ ! -x "$_scrap_venv/bin/python" ]; then
  echo "scrap_perception: no venv at $_scrap_venv; run scripts/bootstrap.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
export VIRTUAL_ENV=$_scrap_venv
case ":$PATH:" in *":$_scrap_venv/bin:"*) ;; *) export PATH=$_scrap_venv/bin:$PATH ;; esac
if [ -z "${ROS_DISTRO:-}" ]; then
  # The venv is the ament prefix of the ROS wheels. Setting the library path here spares every
  # Python start the wheels' re-exec that would otherwise do it.
  _scrap_site=$("$_scrap_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
  _scrap_libs=$_scrap_venv/lib
  for _d in "$_scrap_site"/ros_*.libs; do [ -d "$_d" ] && _scrap_libs=$_scrap_libs:$_d; done
  export LD_LIBRARY_PATH=$_scrap_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  export AMENT_PREFIX_PATH=$_scrap_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
  export CMAKE_PREFIX_PATH=$_scrap_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
fi
# Fast DDS drops best-effort samples over its 512 KB shared-memory segment, i.e. camera images: see
# config/fastdds_large_images.xml. Every process of the system needs it (camera drivers too).
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$_scrap_root/config/fastdds_large_images.xml}
if [ -z "${SCRAP_ENV_NO_WS:-}" ] && [ -f "$_scrap_ws/install/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_scrap_ws/install/local_setup.bash"
fi
unset _scrap_root _scrap_venv _scrap_ws _scrap_site _scrap_libs _d
