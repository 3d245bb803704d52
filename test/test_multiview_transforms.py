"""Rigid transforms and the frame tree (multiview.transforms): quaternion <-> rotation, composition
through a common ancestor, inverse direction, and the errors naming what is missing."""
import numpy as np
import pytest

from scrap_perception.multiview.rig import look_at
from scrap_perception.multiview.transforms import (FrameTree, invert, matrix_to_transform, quaternion_to_rotation,
                                                   rotation_to_quaternion, transform_matrix)


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return transform_matrix(rng.uniform(-5, 5, 3), q)


def test_quaternion_of_a_quarter_turn_about_z_maps_x_to_y():
    s = np.sqrt(0.5)
    R = quaternion_to_rotation((0, 0, s, s))
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(R @ [0, 0, 1], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rotation_to_quaternion(R), [0, 0, s, s], atol=1e-12)


def test_a_non_unit_quaternion_is_normalised_and_a_zero_one_refused():
    np.testing.assert_allclose(quaternion_to_rotation((0, 0, 0, 3.0)), np.eye(3))
    for q in ((0, 0, 0, 0), (np.nan, 0, 0, 1)):
        with pytest.raises(ValueError, match="not a rotation"):
            quaternion_to_rotation(q)
    with pytest.raises(ValueError, match="not finite"):
        transform_matrix((0, np.inf, 0), (0, 0, 0, 1))


def test_rotation_quaternion_round_trip_including_half_turns():
    rng = np.random.default_rng(3)
    rotations = [quaternion_to_rotation(rng.normal(size=4)) for _ in range(200)]
    rotations += [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), np.eye(3),
                  look_at(np.array([0.0, 0, 3]), np.zeros(3))[:3, :3]]  # a camera looking straight down
    for R in rotations:
        q = rotation_to_quaternion(R)
        assert q[3] >= 0 and np.isclose(np.linalg.norm(q), 1)
        np.testing.assert_allclose(quaternion_to_rotation(q), R, atol=1e-12)
        assert np.isclose(np.linalg.det(R), 1)
    T = random_pose(rng)
    t, q = matrix_to_transform(T)
    np.testing.assert_allclose(transform_matrix(t, q), T, atol=1e-12)


def test_invert_is_the_inverse():
    T = random_pose(np.random.default_rng(1))
    np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(invert(T), np.linalg.inv(T), atol=1e-12)


def test_lookup_composes_chains_through_the_common_ancestor_in_either_direction():
    rng = np.random.default_rng(7)
    T_w_b, T_b_c0, T_b_c1, T_w_o = (random_pose(rng) for _ in range(4))
    tree = FrameTree()
    tree.set("world", "rig_base", T_w_b)
    tree.set("rig_base", "cam0", T_b_c0)
    tree.set("rig_base", "cam1", T_b_c1)
    tree.set("world", "other", T_w_o)
    assert tree.frames == {"world", "rig_base", "cam0", "cam1", "other"}
    np.testing.assert_allclose(tree.lookup("world", "cam0"), T_w_b @ T_b_c0, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("cam0", "world"), invert(T_w_b @ T_b_c0), atol=1e-12)
    np.testing.assert_allclose(tree.lookup("cam0", "cam1"), invert(T_b_c0) @ T_b_c1, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("other", "cam1"), invert(T_w_o) @ T_w_b @ T_b_c1, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("cam1", "cam1"), np.eye(4))
    # A point given in cam0 lands where the chain puts it.
    p = np.array([0.1, -0.2, 2.0, 1.0])
    np.testing.assert_allclose(tree.lookup("world", "cam0") @ p, T_w_b @ (T_b_c0 @ p), atol=1e-12)


def test_setting_a_child_again_replaces_its_edge():
    tree = FrameTree()
    tree.set("world", "cam", transform_matrix((1, 0, 0), (0, 0, 0, 1)))
    tree.set("world", "cam", transform_matrix((2, 0, 0), (0, 0, 0, 1)))
    assert tree.lookup("world", "cam")[0, 3] == 2


def test_lookup_errors_name_the_missing_frame_or_link():
    tree = FrameTree()
    tree.set("world", "rig_base", np.eye(4))
    tree.set("odom", "cam0", np.eye(4))
    with pytest.raises(LookupError, match="unknown frame 'cam9'"):
        tree.lookup("world", "cam9")
    with pytest.raises(LookupError, match="unknown frame ''"):
        tree.lookup("world", "")
    with pytest.raises(LookupError, match="not connected.*'world' and 'odom'"):
        tree.lookup("world", "cam0")
    tree.set("cam0", "odom", np.eye(4))  # odom -> cam0 -> odom: a loop
    with pytest.raises(LookupError, match="loop"):
        tree.lookup("world", "cam0")
    for parent, child in (("a", "a"), ("", "b"), ("a", "")):
        with pytest.raises(ValueError):
            tree.set(parent, child, np.eye(4))
