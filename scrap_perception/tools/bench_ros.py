"""The benchmark's end-to-end part: camera frames through DDS to the perception node and back.

Three processes: the benchmark (no rclpy), the perception node (``scrap_perception.ros.perception_node``
with the benchmark's models) and a driver (``python -m scrap_perception.tools.bench_ros SPEC.json``)
that publishes each camera's 1280x720 rgb8 ``Image`` and ``Detection2DArray`` and receives the
``ScrapInstanceArray``s. The benchmark drives the driver one frame set at a time (``RosSession``), so
the ros mode runs interleaved with the in-process modes. The driver stamps every frame with its own send
time and matches results by ``header.stamp`` (the node echoes it), so latency = receipt - send on one
clock, covering serialisation, DDS transport both ways, conversion, pairing, the worker hand-off, the
pipeline and publishing. One frame set (one frame per camera) is in flight at a time: latency, not
queueing, is measured.

At the end the driver also times the ROS conversions on their own: receiving a 1280x720 rgb8 image
(deserialisation + ``image_to_rgb``) and publishing a 20-instance array (``result_to_msg`` + publish).
rclpy is imported only inside the node and the driver processes.
"""
from __future__ import annotations

import importlib.util
import json
import os
import select
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


class RosSession:
    """The perception node (``cameras`` cameras, ``node_params``) and the driver, started together; the
    driver answers one request at a time on its stdin/stdout (a JSON line each way, answers prefixed
    with ANSWER). Use as a context manager: leaving it stops both processes."""

    ANSWER = "@bench "

    def __init__(self, frames_path: Path, node_params: Mapping[str, Any], out_dir: Path, cameras: int,
                 startup_timeout: float = 600.0) -> None:
        params = dict(node_params, camera_names=camera_names(cameras))
        spec = {"frames": str(frames_path), "cameras": camera_names(cameras), "startup_timeout": startup_timeout}
        self.out_dir = out_dir
        spec_path = out_dir / "ros_spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        self._log = open(out_dir / "ros_node.log", "wb")
        self.node = subprocess.Popen([sys.executable, "-m", NODE_MODULE, *ros_args(params)], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=_env())
        self.driver = subprocess.Popen([sys.executable, "-m", DRIVER_MODULE, str(spec_path), str(self.node.pid)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env())
        self._pending = b""  # driver output read but not yet split into lines
        try:
            self._answer(startup_timeout + 30.0)  # {"ready": true} once the node subscribes
        except BaseException:
            self.close()
            raise

    def frame_set(self, boxes: int, cameras: int, timeout_s: float) -> dict[str, Any]:
        """Publishes one frame set (N ``boxes`` per camera) and waits for every camera's array: returns
        {"set_s": latency of the last camera, "latency_s": [per camera], "instances": [per camera],
        "missed": bool}. A first set that never comes back raises RuntimeError."""
        return self._request({"cmd": "set", "boxes": boxes, "cameras": cameras, "timeout_s": timeout_s},
                             timeout_s + 30.0)

    def round_trip(self, repeats: int = 20) -> dict[str, Any]:
        """The ROS cost of a frame without model work: a second node with no models (segmenter grabcut,
        no classifier) on its own camera gets frame 0 with an empty Detection2DArray, ``repeats`` times
        after 2 warm-ups: {"round_trip_s": median seconds from publishing the image + detections to
        receiving the (empty) array: transport both ways, conversion, pairing, worker hand-off, publish}."""
        camera = "bench_probe"
        params = {"camera_names": [camera], "segmenter.model_type": "grabcut", "segmenter.checkpoint": "",
                  "classifier.model": "none", "publish_overlay": False, "log_throttle": 60.0}
        with open(self.out_dir / "ros_probe_node.log", "wb") as log:
            probe = subprocess.Popen([sys.executable, "-m", NODE_MODULE, *ros_args(params)], stdout=log,
                                     stderr=subprocess.STDOUT, env=_env())
            try:
                return self._request({"cmd": "round_trip", "camera": camera, "repeats": repeats,
                                      "node_pid": probe.pid}, 180.0)
            finally:
                _stop(probe)

    def finish(self) -> dict[str, Any]:
        """The conversion costs and the node's peak RSS; the driver then exits."""
        return self._request({"cmd": "finish"}, 300.0)

    def _request(self, request: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        try:
            self.driver.stdin.write((json.dumps(request) + "\n").encode())
            self.driver.stdin.flush()
        except BrokenPipeError:
            pass  # the driver is gone; _answer says why
        return self._answer(timeout)

    def _answer(self, timeout: float) -> dict[str, Any]:
        """The driver's next answer line. Its stdout is read unbuffered (os.read): other output there
        (middleware messages) is skipped, and select never waits on data already read."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode(errors="replace")
                if line.startswith(self.ANSWER):
                    answer = json.loads(line[len(self.ANSWER):])
                    if "error" in answer:
                        raise RuntimeError(answer["error"])
                    return answer
            if self.node.poll() is not None:
                tail = (self.out_dir / "ros_node.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the perception node exited with code {self.node.returncode}; log tail:\n{tail}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the ROS driver did not answer within {timeout:.0f} s "
                                   f"(node log: {self.out_dir / 'ros_node.log'})")
            ready, _, _ = select.select([self.driver.stdout], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(self.driver.stdout.fileno(), 1 << 16)
            if not chunk:
                self.driver.wait(10)
                raise RuntimeError(f"the ROS driver failed (exit code {self.driver.returncode}, its message "
                                   f"above); node log: {self.out_dir / 'ros_node.log'}")
            self._pending += chunk

    def close(self) -> None:
        _stop(self.driver)
        _stop(self.node)
        self._log.close()

    def __enter__(self) -> "RosSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ------------------------------------------------------------------------------------------- driver
def drive(spec: Mapping[str, Any], node_pid: int) -> None:
    """The driver process (see the module docstring): answers RosSession's requests read from stdin,
    'set' (one frame set), 'round_trip' (the model-free probe node; a failure is answered, the session
    goes on) and 'finish' (the conversion costs, then exit)."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray

    from scrap_perception.msg import ScrapInstanceArray
    from scrap_perception.ros.conversions import rgb_to_image
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

    def subscribe(cam: str) -> None:
        node.create_subscription(ScrapInstanceArray, f"{cam}/scrap_instances", lambda m: on_array(cam, m),
                                 output_qos(50))

    for c in cams:
        subscribe(c)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    messages: dict[tuple[int, int], tuple[list, list]] = {}
    arrays: list = []  # the last frame set's arrays with 20 instances, for the conversion costs
    first: set = set()  # configurations that returned a frame set
    try:
        _wait_for_node(node, image_pubs + det_pubs, cams, node_pid, spec["startup_timeout"])
        answer({"ready": True})
        for line in sys.stdin:
            request = json.loads(line)
            if request["cmd"] == "round_trip":
                cam = request["camera"]
                pubs = (node.create_publisher(Image, f"{cam}/image_raw", qos),
                        node.create_publisher(Detection2DArray, f"{cam}/detections", qos))
                subscribe(cam)
                try:
                    _wait_for_node(node, pubs, [cam], int(request["node_pid"]), 120.0)
                    answer(_round_trip(rgb_to_image(frames[0].rgb), cam, pubs, int(request["repeats"]),
                                       received, lock))
                except RuntimeError as e:  # the frame-set results stand: say why, keep serving
                    answer({"error": f"round trip: {e}"})
                continue
            if request["cmd"] == "finish":
                answer({"conversions": _conversion_costs(node, frames[0], arrays),
                        "node_peak_rss_mb": status_mb("VmHWM", node_pid),
                        "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")})
                break
            n, ncam = int(request["boxes"]), int(request["cameras"])
            if (n, ncam) not in messages:  # built once; each set only gets a new header
                messages[(n, ncam)] = ([rgb_to_image(frames[c].rgb) for c in range(ncam)],
                                       [_detections(Header(), frames[c].boxes[:n]) for c in range(ncam)])
            result, got = _frame_set(*messages[(n, ncam)], cams, image_pubs, det_pubs, received, lock,
                                     float(request["timeout_s"]))
            if result["missed"] and (n, ncam) not in first:
                answer({"error": f"no ScrapInstanceArray for the first frame set (N={n}, {ncam} camera(s)) "
                                 f"within {request['timeout_s']:.0f} s; the node log says whether images arrived "
                                 "(Fast DDS drops best-effort samples over 512 KB unless "
                                 "FASTDDS_DEFAULT_PROFILES_FILE raises its segment size)"})
                break
            first.add((n, ncam))
            if any(len(m.instances) == 20 for m in got):
                arrays = got
            answer(result)
    finally:
        executor.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown()


def answer(obj: Mapping[str, Any]) -> None:
    """One answer line to the benchmark (RosSession); rclpy and tqdm write to stderr."""
    print(RosSession.ANSWER + json.dumps(obj), flush=True)


def _round_trip(image: Any, cam: str, pubs: Sequence[Any], repeats: int, received: dict,
                lock: Any) -> dict[str, Any]:
    """``image`` with an empty Detection2DArray to ``cam``, ``repeats`` times after 2 warm-ups."""
    from vision_msgs.msg import Detection2DArray

    times = []
    for _ in range(repeats + 2):
        result, _ = _frame_set([image], [Detection2DArray()], [cam], pubs[:1], pubs[1:], received, lock, 30.0)
        if result["missed"]:
            raise RuntimeError("the model-free probe node returned no array within 30 s")
        times.append(result["set_s"])
    return {"round_trip_s": statistics.median(times[2:]), "samples_s": times[2:]}


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


def _frame_set(images: Sequence[Any], detections: Sequence[Any], cams: Sequence[str], image_pubs: Sequence[Any],
               det_pubs: Sequence[Any], received: dict, lock: Any, timeout_s: float) -> tuple[dict[str, Any], list]:
    """Publishes one frame per camera (``images`` / ``detections``, stamped now) and waits for the arrays.
    Returns the timings and the arrays received."""
    from std_msgs.msg import Header

    stamp_ns = time.time_ns()
    header = Header(frame_id="bench")
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
    keys = [(cams[c], header.stamp.sec, header.stamp.nanosec) for c in range(len(images))]
    t0 = time.perf_counter()
    for c in range(len(images)):
        images[c].header = detections[c].header = header
        image_pubs[c].publish(images[c])
        det_pubs[c].publish(detections[c])
    with lock:
        done = lock.wait_for(lambda: all(key in received for key in keys), timeout=timeout_s)
        got = [received.pop(key) for key in keys if key in received]
    lat = [t - t0 for t, _ in got]
    return {"missed": not done, "latency_s": lat, "set_s": max(lat) if done else float("nan"),
            "instances": [len(m.instances) for _, m in got]}, [m for _, m in got]


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
        answer({"error": f"bench ros driver: {e}"})
        return 1
    except KeyboardInterrupt:  # RosSession stops the driver with SIGINT when the node has failed
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
