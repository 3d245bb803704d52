"""Parameters: one declaration, the YAML in config/ documents and loads every one, bad values are
refused with their name (at start and at runtime), a missing checkpoint stops the node."""
import re

import pytest
import yaml

from ros_helpers import CONFIG, BoxSegmenter, start_node

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from scrap_perception.pipeline import PROMPT_MODES, Pipeline  # noqa: E402
from scrap_perception.ros import params  # noqa: E402
from scrap_perception.ros.params import PERCEPTION_PARAMS, ParamError, validate  # noqa: E402


def yaml_params():
    doc = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    (key, body), = doc.items()
    assert key.endswith("scrap_perception_node")
    return body["ros__parameters"]


def test_config_yaml_sets_or_documents_every_parameter_and_validates():
    text = CONFIG.read_text(encoding="utf-8")
    values = yaml_params()
    assert set(values) <= set(params.SPECS), f"unknown keys in the YAML: {set(values) - set(params.SPECS)}"
    for spec in PERCEPTION_PARAMS:
        if spec.name not in values:
            # Only empty lists may be left out (a parameter file cannot hold []); they are documented.
            assert spec.default == [] and re.search(rf"^\s*#\s*{re.escape(spec.name)}:", text, re.M), spec.name
        # a comment line right above each set parameter
        m = re.search(rf"((?:^\s*#.*\n)+)^\s*{re.escape(spec.name)}:", text, re.M)
        assert m or spec.name not in values, f"{spec.name} has no comment in {CONFIG}"
        assert spec.description.strip()
    cleaned = validate(values)
    assert cleaned["camera_names"] == ["cam_left", "cam_right"]
    assert params.PROMPT_MODES == PROMPT_MODES


def test_config_yaml_equals_the_declared_defaults():
    """One source of defaults: the shipped YAML sets every parameter to its declared default, so a node
    started without a parameter file behaves as one started with it."""
    values = yaml_params()
    differ = {k: (v, params.SPECS[k].default) for k, v in values.items() if v != params.SPECS[k].default}
    assert not differ, f"YAML value vs declared default: {differ}"


def test_precision_defaults_to_auto_from_the_engine_configs():
    from scrap_perception.classification import ClassifierConfig
    from scrap_perception.segmentation import SegmenterConfig

    assert params.SPECS["segmenter.precision"].default == SegmenterConfig().precision == "auto"
    assert params.SPECS["classifier.precision"].default == ClassifierConfig().precision == "auto"
    assert validate({})["segmenter.precision"] == "auto"


@pytest.mark.parametrize("name, value, words", [
    ("min_mask_score", 1.5, ["min_mask_score", "outside"]),
    ("min_mask_score", "high", ["min_mask_score", "expected double"]),
    ("min_area", -1, ["min_area"]),
    ("segmenter.model_type", "vit_x", ["segmenter.model_type", "unknown segmenter model type"]),
    ("segmenter.device", "gpu7", ["segmenter.device"]),
    ("segmenter.arch", "{not json", ["segmenter.arch", "JSON"]),
    ("classifier.labels", ["0:Angle:角钢", "0:Bar:圆钢"], ["labels", "duplicate id"]),
    ("camera_names", [], ["camera_names"]),
    ("camera_names", ["a", "a"], ["camera_names", "duplicate"]),
    ("camera_names", ["bad name"], ["camera_names"]),
    ("pairing.max_age", float("nan"), ["pairing.max_age"]),
    ("segmenter.precision", "bf32", ["segmenter.precision", "'auto', 'fp32', 'bf16', 'fp16'"]),
    ("classifier.precision", "AUTO", ["classifier.precision", "not one of"]),
])
def test_validate_names_the_parameter(name, value, words):
    with pytest.raises(ParamError) as e:
        validate({name: value})
    assert str(e.value).startswith(words[0]) or str(e.value).startswith(name)
    for w in words:
        assert w in str(e.value)


def test_topic_lists_must_match_cameras():
    with pytest.raises(ParamError, match="image_topics: 1 topics for 2 cameras"):
        validate({"camera_names": ["a", "b"], "image_topics": ["/x/image"]})
    assert validate({"camera_names": ["a", "b"], "image_topics": ["/x", "/y"]})["image_topics"] == ["/x", "/y"]


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def make_node(context, *cli):
    from scrap_perception.ros.perception_node import PerceptionNode

    node = PerceptionNode(pipeline_factory=lambda p: Pipeline(BoxSegmenter(), None, p["segmenter.prompt_mode"],
                                                              p["min_mask_score"], p["min_area"]),
                          context=context, cli_args=["--ros-args", "--params-file", str(CONFIG), *cli])
    assert node.autostart(), node.state
    return node


def test_yaml_loads_through_params_file_into_the_node(context):
    node = make_node(context, "-p", "min_area:=25")
    try:
        expected = yaml_params()
        for spec in PERCEPTION_PARAMS:
            got = node.get_parameter(spec.name).value if spec.name in expected else None
            if spec.name == "min_area":
                assert got == 25
            elif spec.name in expected:
                assert got == expected[spec.name] or list(got) == expected[spec.name], spec.name
        assert node.cameras == ["cam_left", "cam_right"]
        assert node.pipeline.min_area == 25
        assert node.p["image_topics"] == []
        desc = node.describe_parameter("min_mask_score")
        assert desc.floating_point_range[0].to_value == 1.0 and not desc.read_only
        # a managed node: static parameters are settable while unconfigured only (refused below)
        assert "unconfigured" in node.describe_parameter("segmenter.model_type").description
    finally:
        node.shutdown()
        node.destroy_node()


@pytest.mark.parametrize("override, words", [
    ("min_mask_score:=1.5", ["min_mask_score", "out of range"]),
    ("min_mask_score:=1", ["min_mask_score", "type"]),
    ("segmenter.prompt_mode:=points", ["segmenter.prompt_mode", "not one of"]),
    ("camera_names:=[cam0,cam0]", ["camera_names", "duplicate"]),
])
def test_invalid_override_refused_with_its_name(context, override, words):
    with pytest.raises(ParamError) as e:
        make_node(context, "-p", override)
    for w in words:
        assert w in str(e.value)


def test_runtime_changes_validated_and_applied(context):
    node = make_node(context)
    try:
        ok = node.set_parameters([Parameter("min_mask_score", value=0.7), Parameter("publish_overlay", value=False),
                                  Parameter("pairing.max_age", value=0.5),
                                  Parameter("segmenter.prompt_mode", value="box")])
        assert all(r.successful for r in ok)
        assert node.pipeline.min_mask_score == 0.7 and node.p["publish_overlay"] is False
        assert node.pipeline.prompt_mode == "box"
        assert all(pr.max_age == 0.5 for pr in node.pairers.values())
        bad = node.set_parameters([Parameter("min_mask_score", value=2.0)])[0]
        assert not bad.successful and "min_mask_score" in bad.reason
        bad = node.set_parameters([Parameter("segmenter.prompt_mode", value="nope")])[0]
        assert not bad.successful and "segmenter.prompt_mode" in bad.reason
        static = node.set_parameters([Parameter("segmenter.model_type", value="vit_t")])[0]
        assert not static.successful and "unconfigured" in static.reason
        assert node.pipeline.min_mask_score == 0.7
    finally:
        node.shutdown()
        node.destroy_node()


def test_node_process_refuses_bad_value(tmp_path):
    """Through a real process: exit code 2 and one line naming the parameter, no traceback. (A missing
    checkpoint leaves the managed node up, unconfigured: test_ros_lifecycle.py.)"""
    proc = start_node(tmp_path, "bad_value", min_mask_score=3.0)
    try:
        assert proc.wait(120) == 2, proc.output()[-2000:]
        assert "min_mask_score" in proc.stderr and "Traceback" not in proc.stderr
    finally:
        proc.close()


def test_checkpoints_are_required_unless_random_or_weight_free(tmp_path, monkeypatch):
    from scrap_perception.ros.pipeline_factory import build_pipeline, resolve_checkpoint
    from scrap_perception.ros.params import PERCEPTION_PARAMS, ParamError

    with pytest.raises(ParamError, match=r"segmenter.checkpoint is not set: download sam_vit_b_01ec64.pth"):
        resolve_checkpoint("segmenter.checkpoint", "", "sam_vit_b_01ec64.pth")
    assert resolve_checkpoint("segmenter.checkpoint", "random", "sam_vit_b_01ec64.pth") is None
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sam.pth").write_bytes(b"x")
    assert resolve_checkpoint("segmenter.checkpoint", "~/sam.pth", "f") == str(tmp_path / "sam.pth")

    # The shipped defaults point at the official files under ~/.ros: absent here, so the node must refuse
    # to start, naming the parameter and the file, rather than run random weights.
    defaults = {spec.name: spec.default for spec in PERCEPTION_PARAMS}
    with pytest.raises(ParamError, match=r"segmenter.checkpoint: expected sam_vit_b_01ec64.pth, but"):
        build_pipeline({**defaults, "segmenter.checkpoint": "~/.ros/scrap_perception/sam_vit_b_01ec64.pth"})
    with pytest.raises(ParamError, match=r"classifier.checkpoint is not set: download clip_cn_vit-b-16.pt"):
        build_pipeline({**defaults, "segmenter.model_type": "grabcut", "classifier.checkpoint": ""})
    # a bad file is named by the node's parameter, in one line
    from scrap_perception.checkpoints import CheckpointError

    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"^segmenter\.checkpoint='.*empty\.pth': empty file") as e:
        build_pipeline({**defaults, "segmenter.checkpoint": str(tmp_path / "empty.pth"), "classifier.model": "none"})
    assert "\n" not in str(e.value)
    weight_free = build_pipeline({**defaults, "segmenter.model_type": "grabcut", "classifier.model": "none"})
    assert weight_free.segmenter.name == "grabcut" and weight_free.classifier.name == "none"
