"""The association node through real processes and DDS: camera sets of a generated 3-camera rig (ground-
truth masks) in, ScrapObjects with the right member views and stable ids out; bad sets counted, never a
crash, the next set processed; the camera poses from TF (/tf_static) give the objects the rig file gives."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ros_helpers import NodeProcess, ros_args

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy")


@pytest.fixture(scope="module")
def rig_set(tmp_path_factory) -> Path:
    from scrap_perception.tools.synth_cmd import generate_multiview

    out = tmp_path_factory.mktemp("mv")
    generate_multiview(out, cameras=3, frames=3, seed=5, image_size=(240, 320), objects=(6, 8), progress=False)
    return out


def view_sets(folder: Path):
    """Per frame: a ScrapViewSet of the ground-truth masks (instance id '<cam>/<object_id>') and the
    ground truth {object_id: {camera: instance id}}."""
    import json

    from sensor_msgs.msg import CameraInfo

    from scrap_perception.masks import crop_to_roi
    from scrap_perception.msg import ScrapInstance, ScrapInstanceArray, ScrapViewSet
    from scrap_perception.multiview.rig import load_rig

    rig = load_rig(folder / "rig.yaml")
    coco = json.loads((folder / "annotations.json").read_text())
    anns = defaultdict(list)
    for a in coco["annotations"]:
        anns[a["image_id"]].append(a)
    frames = defaultdict(dict)
    for im in coco["images"]:
        frames[im["frame"]][im["camera"]] = im
    out = []
    for k in sorted(frames):
        vs = ScrapViewSet()
        vs.header.stamp.sec = 100 + k
        vs.header.frame_id = "world"
        truth = defaultdict(dict)
        for cam in rig.names:
            im = frames[k][cam]
            arr = ScrapInstanceArray(camera_name=cam, image_height=im["height"], image_width=im["width"])
            arr.header = vs.header
            for a in anns[im["id"]]:
                (x, y, w, h), crop = crop_to_roi(mask_utils.decode(a["segmentation"]) > 0)
                inst = ScrapInstance(id=f"{cam}/{a['object_id']}", area=int(crop.sum()))
                inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height = x, y, w, h
                inst.mask.height, inst.mask.width, inst.mask.step, inst.mask.encoding = h, w, w, "mono8"
                inst.mask.data = (crop.astype(np.uint8) * 255).tobytes()
                arr.instances.append(inst)
                truth[a["object_id"]][cam] = inst.id
            vs.views.append(arr)
            vs.camera_infos.append(CameraInfo(**rig[cam].camera_info()))
        out.append((vs, {o: m for o, m in truth.items() if len(m) >= 2}))
    return out


class Client:
    """Publishes sets on <ns>/scrap_views and collects <ns>/scrap_objects, per namespace of a node."""

    def __init__(self, namespaces: tuple[str, ...] = ("",)) -> None:
        from rclpy.executors import SingleThreadedExecutor

        from scrap_perception.msg import ScrapObjectArray, ScrapViewSet
        from scrap_perception.ros.qos import output_qos

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("assoc_test_client", context=self.context)
        self.pubs = {ns: self.node.create_publisher(ScrapViewSet, f"{ns}/scrap_views", output_qos(10))
                     for ns in namespaces}
        self.arrays: dict[str, list] = {ns: [] for ns in namespaces}
        for ns in namespaces:
            self.node.create_subscription(ScrapObjectArray, f"{ns}/scrap_objects", self.arrays[ns].append,
                                          output_qos(100))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def wait_for_nodes(self, *nodes, timeout: float = 60.0) -> None:
        """Until every namespace's node subscribes its sets (then a second for the reverse match)."""
        deadline = time.monotonic() + timeout
        while any(p.get_subscription_count() == 0 for p in self.pubs.values()) and time.monotonic() < deadline:
            for node in nodes:
                assert node.alive(), node.output()
            time.sleep(0.1)
        time.sleep(1.0)

    def send(self, msg, ns: str = "", timeout: float = 60.0):
        """Publishes a set to the node of ``ns`` and returns the ScrapObjectArray answering it."""
        arrays = self.arrays[ns]
        n = len(arrays)
        self.pubs[ns].publish(msg)
        deadline = time.monotonic() + timeout
        while len(arrays) == n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(arrays) > n, "no ScrapObjectArray for the set"
        return arrays[n]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def test_objects_of_a_generated_rig_come_out_with_their_views_and_keep_their_ids(rig_set, tmp_path):
    node = NodeProcess("scrap_perception.ros.association_node",
                       ros_args(None, rig_file=str(rig_set / "rig.yaml")), tmp_path, "assoc")
    client = Client()
    try:
        client.wait_for_nodes(node)
        ids_of = defaultdict(set)
        found = total = 0
        for vs, truth in view_sets(rig_set):
            out = client.send(vs)
            assert out.header.stamp == vs.header.stamp and out.header.frame_id == "world"
            by_members = {frozenset(zip(o.cameras, o.instance_ids)): o for o in out.objects}
            for o in out.objects:
                assert len(set(o.cameras)) == len(o.cameras) == o.num_views >= 2  # one view per camera at most
                assert np.isfinite([o.position.x, o.position.y, o.position.z]).all() and o.reprojection_error >= 0
            for oid, members in truth.items():
                total += 1
                obj = by_members.get(frozenset(members.items()))
                if obj is not None:
                    found += 1
                    ids_of[oid].add(obj.id)
        assert found >= 0.9 * total, f"{found} of {total} objects seen by 2+ cameras found with their exact views"
        stable = sum(len(v) == 1 for v in ids_of.values())
        assert stable >= 0.9 * len(ids_of), dict(ids_of)
    finally:
        client.close()
        code, _ = node.interrupt(10)
        node.close()
    assert code == 0


def test_bad_sets_are_counted_and_the_next_set_is_processed(rig_set, tmp_path):
    from sensor_msgs.msg import CameraInfo

    from scrap_perception.msg import ScrapViewSet

    node = NodeProcess("scrap_perception.ros.association_node",
                       ros_args(None, rig_file=str(rig_set / "rig.yaml"), log_throttle=0.0), tmp_path, "assoc_bad")
    client = Client()
    try:
        client.wait_for_nodes(node)
        (good, truth), *_ = view_sets(rig_set)
        empty = client.send(ScrapViewSet())
        assert list(empty.objects) == [] and empty.unassociated_views == 0
        no_info = ScrapViewSet(header=good.header, views=list(good.views), camera_infos=[CameraInfo()] * 3)
        assert len(client.send(no_info).objects) >= 1  # the rig's intrinsics stand in
        unknown = ScrapViewSet(header=good.header, views=list(good.views), camera_infos=list(good.camera_infos))
        unknown.views[0] = type(good.views[0])(camera_name="cam_not_in_rig", instances=good.views[0].instances)
        assert len(client.send(unknown).objects) >= 1  # the two known cameras still associate
        after = client.send(good)
        assert len(after.objects) >= 0.9 * len(truth)
        time.sleep(1.5)
        out = node.output()
        for code in ("empty_set", "camera_info_missing", "unknown_camera"):
            assert code in out, code
        assert "Traceback" not in out and node.alive()
    finally:
        client.close()
        code, _ = node.interrupt(10)
        node.close()
    assert code == 0


def tf_static(rig, T_world_base: np.ndarray):
    """The rig's camera poses as one latched TFMessage, as static_transform_publisher / robot_state_publisher
    give them: world -> rig_base -> <cam>_optical (an intermediate frame, so lookups compose a chain)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from scrap_perception.multiview.transforms import invert, matrix_to_transform

    def stamped(parent: str, child: str, T: np.ndarray) -> TransformStamped:
        (tx, ty, tz), (qx, qy, qz, qw) = matrix_to_transform(T)
        msg = TransformStamped(child_frame_id=child)
        msg.header.frame_id = parent
        tr = msg.transform
        tr.translation.x, tr.translation.y, tr.translation.z = float(tx), float(ty), float(tz)
        tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = float(qx), float(qy), float(qz), float(qw)
        return msg

    edges = [("world", "rig_base", T_world_base)]
    edges += [("rig_base", f"{c}_optical", invert(T_world_base) @ rig[c].T_world_camera) for c in rig.names]
    return TFMessage(transforms=[stamped(*e) for e in edges])


def test_camera_poses_from_tf_give_the_objects_the_rig_file_gives(rig_set, tmp_path):
    """Two nodes side by side: /rig with the rig file, /tf with extrinsics tf and no rig file (intrinsics
    from the sets' CameraInfo, poses from /tf_static through rig_base; cam0's optical frame named by
    tf.camera_frames, the others' by their views' header.frame_id). A set before any transform is counted
    and answered without objects; a transform that is not rigid is counted; no crash."""
    from geometry_msgs.msg import TransformStamped
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from scrap_perception.multiview.rig import load_rig
    from scrap_perception.multiview.transforms import transform_matrix

    module = "scrap_perception.ros.association_node"
    rig_node = NodeProcess(module, ros_args(None, rig_file=str(rig_set / "rig.yaml")) + ["-r", "__ns:=/rig"],
                           tmp_path, "assoc_rig")
    tf_node = NodeProcess(module, ros_args(None, extrinsics="tf", tf__camera_frames=["cam0:cam0_optical"],
                                           log_throttle=0.0) + ["-r", "__ns:=/tf"], tmp_path, "assoc_tf")
    client = Client(("/rig", "/tf"))
    try:
        client.wait_for_nodes(rig_node, tf_node)
        sets = view_sets(rig_set)
        for vs, _ in sets:
            for view in vs.views:  # what camera drivers stamp on images; cam0's is not in TF (the parameter names it)
                frame = "cam0_link" if view.camera_name == "cam0" else f"{view.camera_name}_optical"
                view.header = Header(stamp=vs.header.stamp, frame_id=frame)
        before = client.send(sets[0][0], "/tf")
        assert list(before.objects) == [] and before.header.frame_id == "world"

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        static_pub = client.node.create_publisher(TFMessage, "/tf_static", latched)
        T_world_base = transform_matrix((1.0, -2.0, 0.5), (0.1, -0.3, 0.8, 0.5))
        static_pub.publish(tf_static(load_rig(rig_set / "rig.yaml"), T_world_base))
        dynamic_pub = client.node.create_publisher(TFMessage, "/tf", 10)
        bad = TransformStamped(child_frame_id="cam_bogus")
        bad.header.frame_id, bad.transform.rotation.w = "world", 0.0  # a zero quaternion
        deadline = time.monotonic() + 30
        while dynamic_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        dynamic_pub.publish(TFMessage(transforms=[bad]))

        # The transforms travel on topics of their own: until they are in, the set is answered without objects.
        while not client.send(sets[0][0], "/tf").objects and time.monotonic() < deadline:
            time.sleep(0.2)
        for vs, truth in sets:
            by_rig, by_tf = ({frozenset(zip(o.cameras, o.instance_ids)): o for o in client.send(vs, ns).objects}
                             for ns in ("/rig", "/tf"))
            assert len(by_rig) >= 0.9 * len(truth)
            assert by_tf.keys() == by_rig.keys()
            for members, o in by_rig.items():
                q = by_tf[members]
                np.testing.assert_allclose([q.position.x, q.position.y, q.position.z],
                                           [o.position.x, o.position.y, o.position.z], atol=1e-6)
                assert q.num_views == o.num_views and abs(q.reprojection_error - o.reprojection_error) < 1e-3

        while "rejected.bad_transform" not in tf_node.output() and time.monotonic() < deadline + 30:
            time.sleep(0.2)
        out = tf_node.output()
        assert "rejected.bad_transform: 1 so far" in out and "cam_bogus" in out, out[-3000:]
        assert "rejected.no_transform: 3 so far" in out and "'cam1_optical'" in out, out[-3000:]
        assert "Traceback" not in out and tf_node.alive()
    finally:
        client.close()
        codes = [n.interrupt(10)[0] for n in (rig_node, tf_node)]
        for n in (rig_node, tf_node):
            n.close()
    assert codes == [0, 0]


def test_multiview_launch_chains_perception_sets_into_objects(rig_set, tmp_path):
    """`ros2 launch scrap_perception multiview.launch.py`: camera images + detector boxes of the generated
    rig (identical stamps) -> perception in sets mode (GrabCut) -> association -> ScrapObjectArray."""
    import json

    import cv2

    from ros_helpers import Client as CameraClient
    from ros_helpers import Ros2Launch, detections_msg, header, image_msg
    from scrap_perception.msg import ScrapObjectArray
    from scrap_perception.multiview.rig import load_rig
    from scrap_perception.ros.qos import output_qos
    from sensor_msgs.msg import CameraInfo

    params = tmp_path / "params.yaml"
    params.write_text("/**/scrap_perception_node:\n  ros__parameters:\n    segmenter.model_type: grabcut\n"
                      "    classifier.model: none\n    sync.frame_id: world\n", encoding="utf-8")
    rig = load_rig(rig_set / "rig.yaml")
    coco = json.loads((rig_set / "annotations.json").read_text())
    images = {(im["frame"], im["camera"]): im for im in coco["images"]}
    boxes = defaultdict(list)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        boxes[a["image_id"]].append((x, y, x + w, y + h))
    launch = Ros2Launch(tmp_path, "multiview.launch.py", rig_file=rig_set / "rig.yaml", params_file=params,
                        camera_names=f"[{', '.join(rig.names)}]")
    cams = CameraClient(rig.names)
    objects: list = []
    cams.node.create_subscription(ScrapObjectArray, "/scrap_objects", objects.append, output_qos(10))
    try:
        launch.wait_for(lambda out: "active: images from" in out and "ready: rig" in out, 120, "both nodes up")
        cams.wait_for_node(60)
        answers = []
        for frame in range(2):
            # Camera images travel best effort: like a camera, send the moment again (new stamp) if one
            # was lost on the way and its set never completed.
            for attempt in range(5):
                sec = 200 + 10 * frame + attempt
                hdr = header(sec, frame_id="world")
                for cam in rig.names:
                    im = images[(frame, cam)]
                    rgb = cv2.cvtColor(cv2.imread(str(rig_set / im["file_name"])), cv2.COLOR_BGR2RGB)
                    cams.info_pubs[cam].publish(CameraInfo(header=hdr, **rig[cam].camera_info()))
                    cams.image_pubs[cam].publish(image_msg(rgb, hdr))
                    cams.det_pubs[cam].publish(detections_msg(hdr, boxes[im["id"]]))
                try:
                    cams.wait_until(lambda: any(a.header.stamp.sec == sec for a in objects), 20, f"frame {frame}")
                except AssertionError:
                    continue
                answers.append(next(a for a in objects if a.header.stamp.sec == sec))
                break
        assert len(answers) == 2, launch.output()[-3000:]
        for arr in answers:
            assert arr.header.frame_id == "world"
            assert len(arr.objects) >= 2 and all(o.num_views >= 2 for o in arr.objects)
    finally:
        cams.close()
        launch.ctrl_c()
        out = launch.output()
        launch.close()
    assert out.count("process has finished cleanly") == 2 and "Traceback" not in out, out[-3000:]
