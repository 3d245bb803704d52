"""Every parameter of the perception node, declared in one place, and their validation.

A ``ParamSpec`` carries the name, default, type, description, range or choices and whether the value
may change while the node runs (``dynamic``). ``validate`` checks a full set of values (types, ranges,
and cross-parameter rules) and raises ``ParamError`` naming the parameter; ``declare`` declares the
specs on an rclpy node with matching ``ParameterDescriptor``s so ``ros2 param describe`` shows them.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from ..classification.config import ClassifierConfig
from ..devices import DEVICE_RE, PRECISION_CHOICES
from ..labels import LabelError, labels_from_strings
from ..pipeline import PROMPT_MODES
from ..segmentation.config import MULTIMASK_CHOICES, SegmenterConfig

# A ROS name token: what may stand for <cam> in "<cam>/image_raw".
TOPIC_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")
# The engines' own defaults: a parameter left out means what the Python API means.
_SEG = SegmenterConfig()
_CLS = ClassifierConfig()
# Where the README tells users to put the official weights (the config file points there too).
CHECKPOINT_DIR = "~/.ros/scrap_perception"


class ParamError(ValueError):
    """A parameter value the node refuses; the message starts with the parameter's name."""


@dataclass(frozen=True)
class ParamSpec:
    """name: dotted ROS parameter name; type: bool, int, double, string or string_array; range:
    inclusive (lo, hi) for numbers (None bound = open); choices: allowed strings; dynamic: may be set
    while the node runs; check: extra rule returning the reason a value is bad, or None."""

    name: str
    default: Any
    type: str
    description: str
    range: Optional[tuple[Optional[float], Optional[float]]] = None
    choices: Optional[tuple[str, ...]] = None
    dynamic: bool = False
    check: Optional[Callable[[Any], Optional[str]]] = None

    def validate(self, value: Any) -> Any:
        """Returns the value (ints accepted for doubles) or raises ParamError."""
        value = _coerce(self, value)
        if self.range is not None:
            lo, hi = self.range
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ParamError(f"{self.name}: {value!r} is outside [{_fmt(lo)}, {_fmt(hi)}]")
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{self.name}: {value!r} is not one of {list(self.choices)}")
        reason = self.check(value) if self.check else None
        if reason:
            raise ParamError(f"{self.name}: {reason}")
        return value


def _fmt(bound: Optional[float]) -> str:
    return "inf" if bound is None else repr(bound)


def _coerce(spec: ParamSpec, value: Any) -> Any:
    t = spec.type
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "double": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "string_array": isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
    }[t]
    if not ok:
        raise ParamError(f"{spec.name}: expected {t}, got {type(value).__name__} {value!r}")
    if t == "double":
        value = float(value)
        if not math.isfinite(value):
            raise ParamError(f"{spec.name}: {value!r} is not a finite number")
    if t == "string_array":
        value = list(value)
    return value


def _model_type(v: str) -> Optional[str]:
    if v.strip().lower() == "grabcut":
        return None
    from ..segmentation.registry import resolve_model_type  # imports torch: only the perception node checks it

    try:
        resolve_model_type(v)
    except ValueError as e:
        return str(e)
    return None


def _device(v: str) -> Optional[str]:
    return None if DEVICE_RE.match(v) else f"{v!r} is not auto, cpu, cuda or cuda:N"


def _json_object_or_empty(v: str) -> Optional[str]:
    if not v.strip():
        return None
    try:
        obj = json.loads(v)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg} at character {e.pos})"
    return None if isinstance(obj, dict) else "must be a JSON object like {\"embed_dim\": 96, ...}"


def _labels(v: list[str]) -> Optional[str]:
    try:
        labels_from_strings(v)
    except LabelError as e:
        return str(e)
    return None


def _background(v: str) -> Optional[str]:
    from ..classification.crops import parse_background  # imports torch: only the perception node checks it

    try:
        parse_background(v)
    except ValueError as e:
        return str(e)
    return None


def _camera_names(v: list[str]) -> Optional[str]:
    if not v:
        return "at least one camera name is needed"
    for name in v:
        if not TOPIC_TOKEN_RE.match(name):
            return f"{name!r} is not a valid topic name prefix"
    if len(set(v)) != len(v):
        return f"duplicate names in {v}"
    return None


TRANSPORTS = ("raw", "compressed")
SYNC_POLICIES = ("independent", "sets")


def _transports(v: list[str]) -> Optional[str]:
    bad = [t for t in v if t not in TRANSPORTS]
    return f"{bad} are not image transports; use {list(TRANSPORTS)}" if bad else None


def _topics(v: list[str]) -> Optional[str]:
    for t in v:
        if not t or " " in t:
            return f"{t!r} is not a topic name"
    return None


DEFAULT_LABEL_STRINGS = [f"{lb.id}:{lb.name}:{lb.text}" for lb in _CLS.labels]

PERCEPTION_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("camera_names", ["cam_left", "cam_right"], "string_array",
              "Cameras; each <cam> has inputs <cam>/image_raw, <cam>/detections and outputs "
              "<cam>/scrap_instances, <cam>/scrap_overlay (relative to the node's namespace).",
              check=_camera_names),
    ParamSpec("image_topics", [], "string_array",
              "Image topic per camera, in camera_names order; empty = <cam>/image_raw.", check=_topics),
    ParamSpec("detection_topics", [], "string_array",
              "Detection2DArray topic per camera, in camera_names order; empty = <cam>/detections.",
              check=_topics),
    ParamSpec("camera_info_topics", [], "string_array",
              "CameraInfo topic per camera, in camera_names order; empty = <cam>/camera_info.", check=_topics),
    ParamSpec("sync.policy", "independent", "string",
              "independent: every camera on its own (per camera the newest frame waits); sets: the cameras' "
              "frames grouped by stamp into synchronized sets, processed and dropped whole, one ScrapViewSet "
              "per set on scrap_views.", choices=SYNC_POLICIES),
    ParamSpec("sync.slop", 0.0, "double",
              "sets: seconds the stamps of one set may lie from its first frame's; 0 = identical stamps "
              "(hardware-triggered cameras).", range=(0.0, 10.0)),
    ParamSpec("sync.max_age", 0.5, "double",
              "sets: seconds (arrival time) an incomplete set waits for its missing cameras before it expires "
              "(counted per missing camera) or, with sync.partial, goes on without them.", range=(0.001, 3600.0),
              dynamic=True),
    ParamSpec("sync.partial", False, "bool",
              "sets: process an incomplete set after sync.max_age with the cameras that are there (marked "
              "partial) instead of dropping it.", dynamic=True),
    ParamSpec("sync.frame_id", "rig", "string", "sets: frame_id of the ScrapViewSet header (the rig's frame)."),
    ParamSpec("image_transport", [], "string_array",
              "Per camera raw (sensor_msgs/Image on <image topic>) or compressed (sensor_msgs/CompressedImage, "
              "jpeg or png, on <image topic>/compressed), in camera_names order; one value = every camera; "
              "empty = raw.", check=_transports),
    ParamSpec("autostart", True, "bool",
              "Configure and activate at start-up (what `ros2 launch` users want); false: the node waits "
              "unconfigured for `ros2 lifecycle set <node> configure` / `activate`."),
    ParamSpec("segmenter.model_type", _SEG.model_type, "string",
              "SAM-family model: vit_b|vit_l|vit_h (SAM), vit_t (MobileSAM), hq:vit_b|hq:vit_l|hq:vit_h|"
              "hq:vit_tiny (SAM-HQ), edge_sam|edge_sam_3x (EdgeSAM), a type added with "
              "segmentation.register_model_type, or grabcut (weight-free, no checkpoint).", check=_model_type),
    ParamSpec("segmenter.checkpoint", f"{CHECKPOINT_DIR}/sam_vit_b_01ec64.pth", "string",
              "Segmenter weights (.pth; ~ and $VARS expanded), e.g. sam_vit_b_01ec64.pth; required unless "
              "model_type is grabcut. 'random' = random weights (tests and timing only; a warning says so)."),
    ParamSpec("segmenter.decoder_checkpoint", "", "string",
              "Fine-tuned mask decoder (from `scrap-tools finetune-decoder`) replacing the stock one; empty = none."),
    ParamSpec("segmenter.arch", "", "string",
              "JSON object overriding the ViT encoder size (small test models), e.g. "
              "{\"embed_dim\":96,\"depth\":2,\"num_heads\":2,\"global_attn_indexes\":[1]}; empty = standard.",
              check=_json_object_or_empty),
    ParamSpec("segmenter.device", _SEG.device, "string", "auto (cuda when available), cpu, cuda or cuda:N.",
              check=_device),
    ParamSpec("segmenter.precision", _SEG.precision, "string",
              "Inference precision: auto (bf16 on CPUs with AVX512-BF16 or AMX and on CUDA compute capability >= 8.0, "
              "else fp32; /diagnostics and the startup log name the result), fp32, bf16 or fp16 (CUDA).",
              choices=PRECISION_CHOICES),
    ParamSpec("segmenter.chunk_size", 0, "int",
              "Prompts decoded per mask-decoder call (decoder batch size); 0 = the device's default (1 on CPU, "
              "64 on CUDA).",
              range=(0, 4096)),
    ParamSpec("segmenter.encoder_batch", 0, "int",
              "Camera images per image-encoder call (encoder batch size); 0 = the device's default (1 on CPU, "
              "where batching is slower per image; 8 on CUDA).",
              range=(0, 64)),
    ParamSpec("segmenter.multimask", _SEG.multimask, "string",
              "Which decoder output becomes the mask: auto (SAM: single mask for box prompts, best of three for "
              "a lone point, as SamPredictor; EdgeSAM: stability), single, best (highest predicted IoU of the "
              "three) or stability (highest stability score of the three; EdgeSAM's IoU head is not distilled).",
              choices=MULTIMASK_CHOICES),
    ParamSpec("segmenter.prompt_mode", "box_point", "string",
              "box = detector box only (strategy S5); box_point = box plus its centre as a positive point "
              "(S6, the paper's best); box_point_refined = box plus the deepest interior point of the box's "
              "own mask (S6 with the point on the object; about twice the decoder time).",
              choices=PROMPT_MODES, dynamic=True),
    ParamSpec("random_seed", 0, "int",
              "torch seed set before the models are built: random-weight runs ('random' checkpoints) are reproducible; "
              "-1 = do not seed.", range=(-1, 2**31 - 1)),
    ParamSpec("classifier.model", _CLS.model, "string",
              "CN-CLIP model name (ViT-B-16, ViT-L-14, ViT-L-14-336, ViT-H-14, RN50), a path to a JSON "
              "file holding a merged cn_clip model config, or none (no classification: class UNKNOWN)."),
    ParamSpec("classifier.checkpoint", f"{CHECKPOINT_DIR}/clip_cn_vit-b-16.pt", "string",
              "CN-CLIP weights (cn_clip format, e.g. clip_cn_vit-b-16.pt or fine-tuned; ~ and $VARS expanded); "
              "required unless classifier.model is none. 'random' = random weights (tests and timing only)."),
    ParamSpec("classifier.device", _CLS.device, "string", "auto, cpu, cuda or cuda:N.", check=_device),
    ParamSpec("classifier.precision", _CLS.precision, "string", "auto (as segmenter.precision), fp32, bf16 or "
              "fp16 (CUDA).", choices=PRECISION_CHOICES),
    ParamSpec("classifier.labels", DEFAULT_LABEL_STRINGS, "string_array",
              "Classes as 'id:name:text' (id = ScrapInstance constant, text = Chinese prompt for CN-CLIP).",
              check=_labels),
    ParamSpec("classifier.crop_margin", _CLS.crop_margin, "double",
              "Context kept around each mask's box when cropping for CN-CLIP, as a fraction of the box size.",
              range=(0.0, 10.0)),
    ParamSpec("classifier.background", _CLS.background, "string",
              "What replaces pixels outside the mask in the crop: gray, mean, black, white, blur, keep (the "
              "original pixels) or an 'r,g,b' colour.", check=_background),
    ParamSpec("classifier.batch_size", _CLS.batch_size, "int", "Crops per CN-CLIP image-encoder call.",
              range=(1, 4096)),
    ParamSpec("classifier.min_score", _CLS.min_score, "double",
              "Best class probability under this gives class UNKNOWN (255).", range=(0.0, 1.0), dynamic=True),
    ParamSpec("min_mask_score", 0.0, "double",
              "Masks whose predicted IoU is under this are dropped (counted as rejected); 0 drops only masks "
              "the model scores negative, -1 keeps them too (random-weight tests).", range=(-1.0, 1.0),
              dynamic=True),
    ParamSpec("min_area", 0, "int", "Masks with fewer pixels are dropped (counted as rejected).",
              range=(0, None), dynamic=True),
    ParamSpec("max_detections", 100, "int",
              "Detections segmented per frame: the highest-scoring are kept, the rest counted as "
              "rejected.too_many, so a runaway detector cannot stall every camera; 0 = no limit.",
              range=(0, 100000), dynamic=True),
    ParamSpec("publish_embeddings", True, "bool",
              "Fill ScrapInstance.embedding with the CN-CLIP image embedding (for cross-view association).",
              dynamic=True),
    ParamSpec("publish_overlay", True, "bool",
              "Render <cam>/scrap_overlay (only while it has subscribers).", dynamic=True),
    ParamSpec("overlay.alpha", 0.5, "double", "Opacity of the mask colours in the overlay.", range=(0.0, 1.0),
              dynamic=True),
    ParamSpec("qos.input_depth", 5, "int",
              "History depth of the image and detection subscriptions (sensor-data QoS: best effort, volatile).",
              range=(1, 1000)),
    ParamSpec("qos.output_depth", 10, "int", "History depth of the (reliable) output publishers.",
              range=(1, 1000)),
    ParamSpec("pairing.buffer_size", 30, "int",
              "Images and detection arrays waiting for their partner, per camera and side.", range=(1, 10000)),
    ParamSpec("pairing.max_age", 2.0, "double",
              "Seconds (arrival time) an image or detection array waits for its partner before it expires.",
              range=(0.01, 3600.0), dynamic=True),
    ParamSpec("diagnostics_period", 1.0, "double", "Seconds between /diagnostics messages.",
              range=(0.05, 60.0)),
    ParamSpec("log_throttle", 5.0, "double",
              "At most one warning per kind of bad input per this many seconds (all are counted).",
              range=(0.0, 3600.0), dynamic=True),
)

SPECS: dict[str, ParamSpec] = {s.name: s for s in PERCEPTION_PARAMS}


def validate(values: Mapping[str, Any], specs: Sequence[ParamSpec] = PERCEPTION_PARAMS) -> dict[str, Any]:
    """Validates every parameter and the rules between them; returns the cleaned values."""
    out = {s.name: s.validate(values.get(s.name, s.default)) for s in specs}
    names = out.get("camera_names", [])
    if len(out.get("image_transport", [])) not in (0, 1, len(names)):
        raise ParamError(f"image_transport: {len(out['image_transport'])} values for {len(names)} cameras "
                         f"{names}; give one per camera, one for all, or none")
    for key in ("image_topics", "detection_topics", "camera_info_topics"):
        if key in out and out[key] and len(out[key]) != len(names):
            raise ParamError(f"{key}: {len(out[key])} topics for {len(names)} cameras {names}; "
                             "give one per camera or none")
    return out


def declare(node: Any, specs: Sequence[ParamSpec] = PERCEPTION_PARAMS, managed: bool = False) -> dict[str, Any]:
    """Declares ``specs`` on an rclpy node (overrides from --params-file / -p apply) and validates them.

    managed: a lifecycle node, which lets its non-dynamic parameters change while it is unconfigured
    (and refuses them otherwise), so they are not read-only here.
    Raises ParamError naming the parameter for a wrong type or value.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.parameter import Parameter

    ptypes = {"bool": Parameter.Type.BOOL, "int": Parameter.Type.INTEGER, "double": Parameter.Type.DOUBLE,
              "string": Parameter.Type.STRING, "string_array": Parameter.Type.STRING_ARRAY}
    for s in specs:
        desc = ParameterDescriptor(name=s.name, description=s.description + ("" if s.dynamic or not managed else
                                   " Set while the node is unconfigured."), read_only=not (s.dynamic or managed))
        if s.choices:
            desc.additional_constraints = "one of: " + ", ".join(s.choices)
        # The descriptor's ranges make rclpy refuse out-of-range values at declaration and at runtime.
        if s.range is not None and s.type == "double":
            lo, hi = s.range
            desc.floating_point_range = [FloatingPointRange(from_value=float(-1e300 if lo is None else lo),
                                                            to_value=float(1e300 if hi is None else hi))]
        elif s.range is not None and s.type == "int":
            lo, hi = s.range
            desc.integer_range = [IntegerRange(from_value=int(-2**63 if lo is None else lo),
                                               to_value=int(2**63 - 1 if hi is None else hi), step=1)]
        try:
            if s.type == "string_array" and not s.default:
                # rclpy cannot infer a type from [] (it would be a byte array): declare the type alone,
                # the value stays unset unless overridden.
                node.declare_parameter(s.name, ptypes[s.type], desc)
            else:
                node.declare_parameter(s.name, s.default, desc)
        except InvalidParameterTypeException as e:
            raise ParamError(f"{s.name}: wrong type ({e}); expected {s.type}") from None
        except InvalidParameterValueException as e:
            raise ParamError(f"{s.name}: {e}") from None
    return validate(current(node, specs), specs)


def current(node: Any, specs: Sequence[ParamSpec] = PERCEPTION_PARAMS) -> dict[str, Any]:
    """The node's present values of ``specs`` (an unset string array reads as [])."""
    from rclpy.parameter import Parameter

    out = {}
    for s in specs:
        p = node.get_parameter_or(s.name, Parameter(s.name, Parameter.Type.NOT_SET))
        out[s.name] = [] if p.type_ == Parameter.Type.NOT_SET else p.value
    return out
