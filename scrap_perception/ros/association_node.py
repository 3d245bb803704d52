"""The association node: camera sets in, 3D scrap objects out (the paper's Pipeline B, next stage).

Subscribes ``scrap_views`` (ScrapViewSet, from the perception node in ``sync.policy: sets``); per set:
the views become Detections (multiview.views), intrinsics from each view's CameraInfo (the rig file's
when a set carries none), extrinsics (``extrinsics``) from the rig file or from TF (``ros.tf_poses``:
the pose of each camera's optical frame in the world frame); ``multiview.association.associate`` ties the
instances of the cameras into objects (one global packing over all cameras), each object seen by two
or more cameras is triangulated (``triangulation.locate``), its class fused over the views
(``fusion.fuse_classes``), and ``tracking.Tracker`` keeps ids over consecutive sets. Publishes one
``ScrapObjectArray`` per set on ``scrap_objects`` (also when empty), a ``visualization_msgs/MarkerArray``
on ``scrap_object_markers`` for RViz, and ``/diagnostics``. Bad input (a view of a camera the rig does
not know, a missing CameraInfo, a camera without a transform yet, a transform that is not rigid, an
unreadable mask, an empty set) is counted and logged (throttled), never a crash; the next set is processed.

Run: ``python -m scrap_perception.ros.association_node --ros-args -p rig_file:=rig.yaml``, or with the
poses from TF: ``... --ros-args -p extrinsics:=tf`` (rig_file then optional: intrinsics fallback only).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import Any, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.node import Node
from visualization_msgs.msg import Marker, MarkerArray

from scrap_perception.msg import ScrapObject, ScrapObjectArray, ScrapViewSet

from ..multiview.association import AssociationConfig, associate
from ..multiview.fusion import fuse_classes
from ..multiview.rig import Camera, Rig, RigError, load_rig
from ..multiview.tracking import Tracker, TrackerConfig
from ..multiview.triangulation import locate
from ..multiview.views import Detection, detection_from_crop
from . import params
from .params import ParamSpec
from .qos import output_qos
from .runner import spin_node
from .stats import LatencyWindow
from .tf_poses import PoseLookup, tf_poses

NODE_NAME = "scrap_association_node"
EXTRINSICS = ("rig", "tf")


def _camera_frames(v: list[str]) -> Optional[str]:
    names = [e.split(":", 1)[0] for e in v]
    bad = [e for e in v if ":" not in e or not all(part.strip() for part in e.split(":", 1))]
    if bad:
        return f"{bad} are not 'camera:frame' pairs"
    return f"cameras named twice in {v}" if len(set(names)) != len(names) else None


ASSOCIATION_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("rig_file", "", "string",
              "The rig file (cameras' intrinsics, image sizes and poses in the world; scrap-tools synth --cameras "
              "writes one): extrinsics come from it (extrinsics: rig), intrinsics from each set's CameraInfo when "
              "present, else from it. Required with extrinsics rig; optional with tf."),
    ParamSpec("extrinsics", "rig", "string",
              "Where the camera poses come from: rig (the rig file's T_world_camera) or tf (the pose of each "
              "camera's optical frame in tf.world_frame from /tf_static and /tf, as robot_state_publisher or "
              "static_transform_publisher publish it; static and the latest dynamic transforms).",
              choices=EXTRINSICS),
    ParamSpec("tf.world_frame", "", "string",
              "extrinsics tf: the frame objects are placed in (z up); empty = each set's header.frame_id (the "
              "perception node's sync.frame_id), or the rig file's frame_id (else 'world') when a set has none."),
    ParamSpec("tf.camera_frames", [], "string_array",
              "extrinsics tf: 'camera:frame' pairs naming a camera's optical frame (x right, y down, z forward); "
              "a camera not listed uses its view's header.frame_id (what camera drivers stamp on images), else "
              "its CameraInfo's.", check=_camera_frames),
    ParamSpec("views_topic", "scrap_views", "string", "ScrapViewSet input (the perception node's sets)."),
    ParamSpec("association.tolerance_px", 12.0, "double",
              "Mask boundary uncertainty in pixels for the epipolar consistency (detector-prompted masks err "
              "by 10-20 px).", range=(0.0, 1000.0), dynamic=True),
    ParamSpec("association.min_consistency", 0.3, "double",
              "Epipolar consistency two masks need to be one object's views.", range=(0.0, 1.0), dynamic=True),
    ParamSpec("association.embedding_weight", 0.0, "double",
              "Weight of the CN-CLIP embedding similarity beside the geometry (0 = geometry alone; use it with "
              "a trained classifier).", range=(0.0, 100.0), dynamic=True),
    ParamSpec("tracking.gate", 0.5, "double", "Metres a tracked object may move between sets and keep its id.",
              range=(0.0, 100.0), dynamic=True),
    ParamSpec("tracking.max_missed", 3, "int", "Sets an object may go unseen and keep its id.", range=(0, 1000),
              dynamic=True),
    ParamSpec("marker_lifetime", 1.0, "double", "Seconds an RViz marker lives (0 = until replaced).",
              range=(0.0, 3600.0), dynamic=True),
    ParamSpec("qos.depth", 10, "int", "History depth of the input and outputs.", range=(1, 1000)),
    ParamSpec("diagnostics_period", 1.0, "double", "Seconds between /diagnostics messages.", range=(0.05, 60.0)),
    ParamSpec("log_throttle", 5.0, "double", "At most one warning per kind of bad input per this many seconds.",
              range=(0.0, 3600.0), dynamic=True),
)
SPECS = {s.name: s for s in ASSOCIATION_PARAMS}


class AssociationNode(Node):
    """See the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.p = params.declare(self, ASSOCIATION_PARAMS)
        from_tf = self.p["extrinsics"] == "tf"
        if not self.p["rig_file"].strip() and not from_tf:
            raise params.ParamError("rig_file: a rig file is needed with extrinsics rig (README, Multi-view)")
        try:
            self.rig: Optional[Rig] = load_rig(self.p["rig_file"]) if self.p["rig_file"].strip() else None
        except RigError as e:
            raise params.ParamError(f"rig_file: {e}") from None
        self.camera_frames = dict(e.split(":", 1) for e in self.p["tf.camera_frames"])
        self.tracker = Tracker(self._tracker_config())
        self.counts: Counter[str] = Counter(
            {k: 0 for k in ("sets_in", "sets_processed", "objects", "views", "unassociated_views")})
        self.rejected: Counter[str] = Counter()
        self.latency = LatencyWindow()
        self._last_warn: dict[str, float] = {}
        self.add_on_set_parameters_callback(self._check_params)
        self.poses: Optional[PoseLookup] = None
        if from_tf:
            try:
                self.poses = tf_poses(self, lambda text: self._reject("bad_transform", text))
            except ImportError as e:
                raise params.ParamError(f"extrinsics: tf needs tf2_ros or tf2_msgs ({e}); scripts/bootstrap.sh "
                                        "builds tf2_msgs") from None
        qos = output_qos(self.p["qos.depth"])
        self.objects_pub = self.create_publisher(ScrapObjectArray, "scrap_objects", qos)
        self.markers_pub = self.create_publisher(MarkerArray, "scrap_object_markers", qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ScrapViewSet, self.p["views_topic"], self._on_set, qos)
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)
        source = (f"poses from TF ({self.poses.name})" if self.poses is not None
                  else f"rig {self.rig.names} in frame {self.rig.frame_id!r}")
        self.get_logger().info(f"ready: {source}, sets from {self.p['views_topic']}")

    # --- one set --------------------------------------------------------------------------------------
    def _on_set(self, msg: ScrapViewSet) -> None:
        t0 = time.perf_counter()
        self.counts["sets_in"] += 1
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        world = self._world_frame(msg)
        rig, views = self._views(msg, world)
        out = ScrapObjectArray(header=msg.header)
        out.header.frame_id = world
        groups, estimates = [], []
        for g in associate(rig, views, self._association_config()) if len(views) >= 2 else []:
            try:
                estimates.append(locate([rig[c] for c, _ in g.members], [views[c][i] for c, i in g.members]))
                groups.append(g)
            except (ValueError, np.linalg.LinAlgError) as e:  # degenerate geometry: its views stay unassociated
                self._reject("triangulation_failed", f"an object of {len(g.members)} views not triangulated: {e}")
        ids = self.tracker.update(np.array([e.position for e in estimates]).reshape(-1, 3), stamp)
        for g, est, oid in zip(groups, estimates, ids):
            dets = [views[c][i] for c, i in g.members]
            fused = fuse_classes([d.class_probs for d in dets])
            out.objects.append(ScrapObject(
                id=oid, class_id=fused.class_id, class_name=fused.class_name, class_score=fused.score,
                class_scores=[float(v) for v in fused.probs], cameras=[d.camera for d in dets],
                instance_ids=[d.instance_id for d in dets], num_views=len(dets),
                position=Point(x=float(est.position[0]), y=float(est.position[1]), z=float(est.position[2])),
                position_covariance=[float(v) for v in est.covariance.ravel()],
                reprojection_error=float(np.sqrt(np.mean(est.reprojection_px ** 2)))))
        n_views = sum(len(v) for v in views.values())
        out.unassociated_views = n_views - sum(len(g.members) for g in groups)
        self.objects_pub.publish(out)
        self.markers_pub.publish(self._markers(out))
        self.counts.update(sets_processed=1, objects=len(out.objects), views=n_views,
                           unassociated_views=out.unassociated_views)
        self.latency.add(time.perf_counter() - t0)

    def _world_frame(self, msg: ScrapViewSet) -> str:
        """The frame objects are placed in: the rig file's, or with TF tf.world_frame or the set's."""
        default = self.rig.frame_id if self.rig is not None else "world"
        if self.poses is None:
            return default
        return self.p["tf.world_frame"] or msg.header.frame_id or default

    def _views(self, msg: ScrapViewSet, world: str) -> tuple[Rig, dict[str, list[Detection]]]:
        """The set's detections per camera, and the rig of its cameras (the set's intrinsics, poses in
        ``world``); bad views counted and left out."""
        cams: dict[str, Camera] = {}
        no_pose: list[str] = []
        views: dict[str, list[Detection]] = {}
        if not msg.views:
            self._reject("empty_set", "a camera set without views: published with no objects")
        if len(msg.camera_infos) != len(msg.views):
            self._reject("camera_info_count", f"{len(msg.views)} views but {len(msg.camera_infos)} CameraInfos: "
                                              "the rig's intrinsics are used")
        for k, view in enumerate(msg.views):
            name = view.camera_name
            info = msg.camera_infos[k] if k < len(msg.camera_infos) else None
            base = self.rig.cameras.get(name) if self.rig is not None else None
            if self.poses is None:
                if base is None:
                    self._reject("unknown_camera", f"camera {name!r} of a set is not in the rig {self.rig.names}: "
                                                   "its view is left out")
                    continue
                pose = base.T_world_camera
            else:
                frame = (self.camera_frames.get(name) or view.header.frame_id
                         or (info.header.frame_id if info is not None else ""))
                try:
                    pose = self.poses.lookup(world, frame)
                except LookupError as e:
                    no_pose.append(f"{name} (frame {frame!r}: {e})")
                    continue
            cam = self._camera(name, base, pose, info)
            if cam is None:
                continue
            cams[name] = cam
            dets = []
            for inst in view.instances:
                try:
                    mask = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(inst.mask.height, inst.mask.step)
                    roi = (inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height)
                    dets.append(detection_from_crop(name, inst.id, roi, mask[:, :inst.mask.width],
                                                    inst.class_scores, inst.embedding))
                except ValueError as e:
                    self._reject("bad_mask", f"{name}: instance {inst.id!r} left out: {e}")
            views[name] = dets
        if no_pose:
            self._reject("no_transform", f"no transform to {world!r} yet for {'; '.join(no_pose)}: their views "
                                         "are left out", len(no_pose))
        return Rig(cams, world), views

    def _camera(self, name: str, base: Optional[Camera], pose: np.ndarray, info: Optional[Any]) -> Optional[Camera]:
        """The camera at ``pose`` (T_world_camera) with the CameraInfo's intrinsics, or the rig file's
        (``base``) when the info is empty or of another image size; None (counted) without either."""
        k = np.asarray(info.k, float).reshape(3, 3) if info is not None else np.zeros((3, 3))
        if (not k[0, 0] or not k[1, 1] or not info.width or not info.height
                or (base is not None and (info.width, info.height) != (base.width, base.height))):
            if base is None:
                self._reject("camera_info_missing", f"{name}: no usable CameraInfo in the set and no rig file "
                                                    "entry: its view is left out")
                return None
            self._reject("camera_info_missing", f"{name}: no usable CameraInfo in the set: the rig's "
                                                "intrinsics are used")
            return replace(base, T_world_camera=pose)
        dist = np.zeros(5)
        if info.distortion_model == "plumb_bob" and len(info.d) == 5:
            dist = np.asarray(info.d, float)
        return Camera(name, int(info.width), int(info.height), k, pose, dist)

    def _markers(self, out: ScrapObjectArray) -> MarkerArray:
        """A sphere and a text (id, class) per object; DELETEALL first so vanished objects go."""
        markers = MarkerArray(markers=[Marker(header=out.header, action=Marker.DELETEALL)])
        life = self.p["marker_lifetime"]
        for obj in out.objects:
            for kind, ns in ((Marker.SPHERE, "objects"), (Marker.TEXT_VIEW_FACING, "labels")):
                m = Marker(header=out.header, ns=ns, id=int(obj.id), type=kind, action=Marker.ADD)
                m.pose.position = obj.position
                m.pose.orientation.w = 1.0
                m.lifetime.sec, m.lifetime.nanosec = int(life), int((life % 1) * 1e9)
                if kind == Marker.SPHERE:
                    m.scale.x = m.scale.y = m.scale.z = 0.15
                    m.color.r, m.color.g, m.color.b, m.color.a = 1.0, 0.5, 0.1, 0.8
                else:
                    m.pose.position = Point(x=obj.position.x, y=obj.position.y, z=obj.position.z + 0.2)
                    m.scale.z = 0.12
                    m.color.r = m.color.g = m.color.b = m.color.a = 1.0
                    m.text = f"{obj.id} {obj.class_name}"
                markers.markers.append(m)
        return markers

    # --- parameters, diagnostics, logging ------------------------------------------------------------
    def _association_config(self) -> AssociationConfig:
        return AssociationConfig(tolerance_px=self.p["association.tolerance_px"],
                                 min_consistency=self.p["association.min_consistency"],
                                 embedding_weight=self.p["association.embedding_weight"])

    def _tracker_config(self) -> TrackerConfig:
        return TrackerConfig(gate=self.p["tracking.gate"], max_missed=self.p["tracking.max_missed"])

    def _check_params(self, changed: list) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        for prm in changed:
            spec = SPECS.get(prm.name)
            if spec is None:
                continue
            try:
                self.p[prm.name] = spec.validate(prm.value)
            except params.ParamError as e:
                return SetParametersResult(successful=False, reason=str(e))
        self.tracker.config = self._tracker_config()
        return SetParametersResult(successful=True)

    def _reject(self, code: str, text: str, n: int = 1) -> None:
        self.rejected[code] += n
        now = time.monotonic()
        if now - self._last_warn.get(code, -1e9) >= self.p["log_throttle"]:
            self._last_warn[code] = now
            self.get_logger().warning(f"{text} (rejected.{code}: {self.rejected[code]} so far)")

    def _publish_diagnostics(self) -> None:
        p50, p95, top = self.latency.percentiles()
        values = {**self.counts, **{f"rejected.{k}": v for k, v in sorted(self.rejected.items())},
                  "rejected.total": sum(self.rejected.values()), "tracks": len(self.tracker.tracks),
                  "latency.associate.p50_ms": f"{p50 * 1000:.1f}", "latency.associate.p95_ms": f"{p95 * 1000:.1f}",
                  "latency.associate.max_ms": f"{top * 1000:.1f}"}
        level = DiagnosticStatus.WARN if self.rejected else DiagnosticStatus.OK
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: association",
                                  hardware_id=self.get_fully_qualified_name(),
                                  message=f"{self.counts['sets_processed']} sets, {self.counts['objects']} objects, "
                                          f"{sum(self.rejected.values())} rejected",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)


def main(args: Optional[list[str]] = None) -> None:
    """Entry point of scrap_association_node; exit code 2 for a configuration error."""
    raise SystemExit(spin_node(NODE_NAME, AssociationNode, (ValueError, RigError), args=args))


if __name__ == "__main__":
    main()
