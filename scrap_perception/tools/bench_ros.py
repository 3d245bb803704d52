"""The benchmark's end-to-end part: camera frames through DDS to the perception node and back.

Three processes: the benchmark (no rclpy), the perception node (``scrap_perception.ros.perception_node``
with the benchmark's models) and a driver (``python -m scrap_perception.tools.bench_ros SPEC.json``)
that publishes each camera's 1280x720 rgb8 ``Image`` and ``Detection2DArray`` and receives the
``ScrapInstanceArray``s. The driver stamps every frame with its own send time and matches results by
``header.stamp`` (the node echoes it), so latency = receipt - send on one clock, covering serialisation,
DDS transport both ways, conversion, pairing, the worker hand-off, the pipeline and publishing. One
frame set (one frame per camera) is in flight at a time: latency, not queueing, is measured.

The driver also times the ROS conversions on their own: receiving a 1280x720 rgb8 image
(deserialisation + ``image_to_rgb``) and publishing a 20-instance array (``result_to_msg`` + publish).
rclpy is imported only inside the node and the driver processes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

NODE_MODULE = "scrap_perception.ros.perception_node"
DRIVER_MODULE = "scrap_perception.tools.bench_ros"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
FASTDDS_PROFILE = PACKAGE_ROOT / "config" / "fastdds_large_images.xml"


def camera_names(n: int) -> list[str]:
    return [f"bench_cam{i}" for i in range(n)]


def unavailable_reason() -> Optional[str]:
    """Why the ROS part cannot run here (None when it can), without importing rclpy in this process."""
    for module in ("rclpy", "sensor_msgs", "vision_msgs"):
        if importlib.util.find_spec(module) is None:
            return f"Python module {module!r} not found (source scripts/env.sh after `make setup`)"
    try:
        if importlib.util.find_spec("scrap_perception.msg") is None:
            return "scrap_perception.msg not built (run `make setup` and source scripts/env.sh)"
    except ImportError as e:
        return f"scrap_perception.msg: {e}"
    return None


def ros_args(params: Mapping[str, Any]) -> list[str]:
    """``--ros-args -p name:=value ...``; strings that YAML would read as something else are quoted."""
    args = ["--ros-args"]
    for name, value in params.items():
        args += ["-p", f"{name}:={_yaml(value)}"]
    return args


def _yaml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_yaml(x) for x in v) + "]"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'" if (not v or any(c in v for c in ":{}[],'#")) else v
    return repr(v)


def _env() -> dict[str, str]:
    """The node's and the driver's environment: this source tree first, and Fast DDS's large-sample profile
    (best-effort images over its default 512 KB shared-memory segment are dropped) unless one is set."""
    path = os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0",
               PYTHONPATH=str(PACKAGE_ROOT) + (os.pathsep + path if path else ""))
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in env and FASTDDS_PROFILE.is_file():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    return env


def run(frames_path: Path, configs: Sequence[Mapping[str, Any]], node_params: Mapping[str, Any],
        out_dir: Path, cameras: int, startup_timeout: float = 600.0) -> dict[str, Any]:
    """Starts the node (``cameras`` cameras, ``node_params``) and the driver; returns the driver's results
    plus the node's peak RSS. configs: [{"boxes", "cameras", "warmup", "repeats", "timeout_s"}, ...]."""
    params = dict(node_params, camera_names=camera_names(cameras))
    spec = {"frames": str(frames_path), "configs": list(configs), "cameras": camera_names(cameras),
            "startup_timeout": startup_timeout, "result": str(out_dir / "ros_driver.json")}
    spec_path = out_dir / "ros_spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    node_log = open(out_dir / "ros_node.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", NODE_MODULE, *ros_args(params)], stdout=node_log,
                            stderr=subprocess.STDOUT, env=_env())
    driver = subprocess.Popen([sys.executable, "-m", DRIVER_MODULE, str(spec_path), str(node.pid)], env=_env())
    try:
        while driver.poll() is None:
            if node.poll() is not None:
                tail = (out_dir / "ros_node.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the perception node exited with code {node.returncode}; log tail:\n{tail}")
            time.sleep(0.5)
        if driver.returncode != 0:
            raise RuntimeError(f"the ROS driver failed (exit code {driver.returncode}, its message above); "
                               f"node log: {out_dir / 'ros_node.log'}")
        result = json.loads(Path(spec["result"]).read_text())
    finally:
        _stop(driver)
        _stop(node)
        node_log.close()
    result["node_log"] = str(out_dir / "ros_node.log")
    return result


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------------------------------- driver
def drive(spec: Mapping[str, Any], node_pid: int) -> dict[str, Any]:
    """The driver process: see the module docstring. Returns the results written to spec['result']."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from scrap_perception.msg import ScrapInstanceArray
    from scrap_perception.ros.qos import output_qos

    from .bench_frames import load_frames
    from .bench_timing import status_mb

    frames = load_frames(spec["frames"])
    cams = list(spec["cameras"])
    rclpy.init()
    node = rclpy.create_node("scrap_bench_driver")
    qos = output_qos(5)
    image_pubs = [node.create_publisher(Image, f"{c}/image_raw", qos) for c in cams]
    det_pubs = [node.create_publisher(Detection2DArray, f"{c}/detections", qos) for c in cams]
    lock = threading.Condition()
    received: dict[tuple[str, int, int], tuple[float, Any]] = {}

    def on_array(cam: str, msg: Any) -> None:
        t = time.perf_counter()
        with lock:
            received[(cam, msg.header.stamp.sec, msg.header.stamp.nanosec)] = (t, msg)
            lock.notify_all()

    for c in cams:
        node.create_subscription(ScrapInstanceArray, f"{c}/scrap_instances", lambda m, c=c: on_array(c, m),
                                 output_qos(50))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        _wait_for_node(node, image_pubs + det_pubs, cams, node_pid, spec["startup_timeout"])
        runs, arrays = [], []
        for cfg in spec["configs"]:
            run_result, last = _run_config(cfg, frames, cams, image_pubs, det_pubs, received, lock)
            runs.append(run_result)
            arrays += last
        conversions = _conversion_costs(node, frames[0], arrays)
        node_peak = status_mb("VmHWM", node_pid)
    finally:
        executor.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown()
    result = {"runs": runs, "conversions": conversions, "node_peak_rss_mb": node_peak,
              "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")}
    Path(spec["result"]).write_text(json.dumps(result, indent=1))
    return result


def _wait_for_node(node: Any, pubs: Sequence[Any], cams: Sequence[str], node_pid: int, timeout: float) -> None:
    """Until the node subscribes to every input (it does so once its models are loaded) and publishes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = all(p.get_subscription_count() > 0 for p in pubs)
        ready = ready and all(node.count_publishers(f"/{c}/scrap_instances") > 0 for c in cams)
        if ready:
            time.sleep(0.5)  # let both directions of discovery settle
            return
        if not Path(f"/proc/{node_pid}").exists():
            raise RuntimeError("the perception node exited before it was ready (see ros_node.log)")
        time.sleep(0.2)
    raise RuntimeError(f"the perception node did not subscribe within {timeout:.0f} s (see ros_node.log)")


def _detections(header: Any, boxes: np.ndarray) -> Any:
    from vision_msgs.msg import Detection2DArray

    from scrap_perception.ros.replay_node import make_detection

    return Detection2DArray(header=header, detections=[make_detection(b.astype(float), f"d{i}", "scrap", 0.9)
                                                       for i, b in enumerate(boxes)])


def _run_config(cfg: Mapping[str, Any], frames: Sequence[Any], cams: Sequence[str], image_pubs: Sequence[Any],
                det_pubs: Sequence[Any], received: dict, lock: Any) -> tuple[dict[str, Any], list[Any]]:
    """Frame sets of ``cfg['cameras']`` cameras with ``cfg['boxes']`` detections each, one set in flight.
    Returns the timings and the arrays of the last set."""
    from std_msgs.msg import Header
    from tqdm import tqdm

    from scrap_perception.ros.conversions import rgb_to_image

    n, ncam = int(cfg["boxes"]), int(cfg["cameras"])
    # Messages are built once; each set only gets a new header (the detector echoes the image's).
    images = [rgb_to_image(frames[c].rgb) for c in range(ncam)]
    detections = [_detections(Header(), frames[c].boxes[:n]) for c in range(ncam)]
    latencies, set_times, instances, missed, last = [], [], [], 0, []
    total = int(cfg["warmup"]) + int(cfg["repeats"])
    for k in tqdm(range(total), desc=f"ros N={n} cameras={ncam}", unit="set", file=sys.stderr):
        stamp_ns = time.time_ns()
        header = Header(frame_id="bench")
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
        keys = [(cams[c], header.stamp.sec, header.stamp.nanosec) for c in range(ncam)]
        t0 = time.perf_counter()
        for c in range(ncam):
            images[c].header = detections[c].header = header
            image_pubs[c].publish(images[c])
            det_pubs[c].publish(detections[c])
        with lock:
            done = lock.wait_for(lambda: all(key in received for key in keys), timeout=float(cfg["timeout_s"]))
            got = [received.pop(key) for key in keys if key in received]
        if not done:
            missed += 1
            if k == 0:
                raise RuntimeError(
                    f"no ScrapInstanceArray for the first frame set (N={n}, {ncam} camera(s)) within "
                    f"{cfg['timeout_s']:.0f} s; the node log says whether images arrived (Fast DDS drops "
                    f"best-effort samples over 512 KB unless FASTDDS_DEFAULT_PROFILES_FILE raises its segment size)")
            continue
        last = [m for _, m in got]
        if k < int(cfg["warmup"]):
            continue
        lat = [t - t0 for t, _ in got]
        latencies.append(lat)
        set_times.append(max(lat))
        instances.append([len(m.instances) for _, m in got])
    median = statistics.median(set_times) if set_times else float("nan")
    return {"boxes": n, "cameras": ncam, "latency_s": latencies, "set_s": set_times, "median_s": median,
            "instances": instances, "missed": missed}, last


def _conversion_costs(node: Any, frame: Any, arrays: Sequence[Any], repeats: int = 20) -> dict[str, Any]:
    """Median seconds of receiving a 1280x720 rgb8 image and of building + publishing a 20-instance array."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from scrap_perception.msg import ScrapInstanceArray
    from scrap_perception.ros.conversions import image_to_rgb, result_to_msg, rgb_to_image
    from scrap_perception.ros.qos import output_qos

    wire = serialize_message(rgb_to_image(frame.rgb, Header(frame_id="bench")))
    deser, to_rgb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        msg = deserialize_message(wire, Image)
        t1 = time.perf_counter()
        rgb = image_to_rgb(msg)
        to_rgb.append(time.perf_counter() - t1)
        deser.append(t1 - t0)
    out: dict[str, Any] = {
        "image_hw": list(frame.rgb.shape[:2]), "image_bytes": len(wire),
        "image_deserialize_s": statistics.median(deser), "image_to_rgb_s": statistics.median(to_rgb),
        "image_to_rgb_is_view": bool(not rgb.flags.owndata),
    }
    result, header, hw, source = _twenty_instance_array(arrays, frame)
    topic = "bench_probe/scrap_instances"
    pub = node.create_publisher(ScrapInstanceArray, topic, output_qos(5))
    node.create_subscription(ScrapInstanceArray, topic, lambda m: None, output_qos(5))
    build, publish = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        msg = result_to_msg(result, header, "bench_cam0", hw, "segmenter", "classifier", True)
        t1 = time.perf_counter()
        pub.publish(msg)
        publish.append(time.perf_counter() - t1)
        build.append(t1 - t0)
    masks = sum(len(i.mask.data) for i in msg.instances)
    out.update({"array_source": source, "array_instances": len(msg.instances), "array_mask_bytes": masks,
                "array_bytes": len(serialize_message(msg)),
                "array_build_s": statistics.median(build), "array_publish_s": statistics.median(publish)})
    return out


def _twenty_instance_array(arrays: Sequence[Any], frame: Any):
    """A FrameResult rebuilt from a received ScrapInstanceArray with 20 instances (the node's real output:
    its masks, scores, embeddings), or else 20 synthetic instances with random masks filling the boxes."""
    from scrap_perception.classification.base import Classification
    from scrap_perception.masks import InstanceMask
    from scrap_perception.pipeline import FrameResult, Instance
    from scrap_perception.prompts import box_point_prompt

    src = next((m for m in arrays if len(m.instances) == 20), None)
    instances = []
    if src is not None:
        for inst in src.instances:
            r = inst.roi
            mask = np.frombuffer(inst.mask.data, np.uint8).reshape(r.height, r.width) > 0
            c = inst.prompt_box
            box = (c.center.position.x - c.size_x / 2, c.center.position.y - c.size_y / 2,
                   c.center.position.x + c.size_x / 2, c.center.position.y + c.size_y / 2)
            cls = Classification(inst.class_id, inst.class_name, inst.class_score,
                                 np.asarray(inst.class_scores, np.float32), np.asarray(inst.embedding, np.float32))
            instances.append(Instance(inst.id, box_point_prompt(box), InstanceMask(
                (r.x_offset, r.y_offset, r.width, r.height), mask, inst.mask_score), cls))
        return FrameResult(instances), src.header, (src.image_height, src.image_width), "node output at N=20"
    rng = np.random.default_rng(0)
    for i in range(20):
        x0, y0, x1, y1 = (int(v) for v in np.round(frame.boxes[i % len(frame.boxes)]))
        mask = rng.random((y1 - y0, x1 - x0)) > 0.3
        probs = rng.dirichlet(np.ones(7)).astype(np.float32)
        emb = rng.normal(size=512).astype(np.float32)
        instances.append(Instance(f"d{i}", box_point_prompt((x0, y0, x1, y1)),
                                  InstanceMask((x0, y0, x1 - x0, y1 - y0), mask, 0.9),
                                  Classification(int(probs.argmax()), "x", float(probs.max()), probs,
                                                 emb / np.linalg.norm(emb))))
    from std_msgs.msg import Header

    return FrameResult(instances), Header(frame_id="bench"), frame.rgb.shape[:2], "synthetic box-sized masks"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m scrap_perception.tools.bench_ros SPEC.json NODE_PID (started by `scrap-tools bench`)",
              file=sys.stderr)
        return 2
    try:
        drive(json.loads(Path(argv[0]).read_text()), int(argv[1]))
    except RuntimeError as e:
        print(f"bench ros driver: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
