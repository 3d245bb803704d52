"""A deterministic, fully populated ScrapInstanceArray, built the same way in any process."""
import numpy as np


def sample_array(seed: int = 7):
    from scrap_perception.msg import ScrapInstance, ScrapInstanceArray

    rng = np.random.default_rng(seed)
    out = ScrapInstanceArray()
    out.header.stamp.sec, out.header.stamp.nanosec = 1_700_000_123, 456_789_000
    out.header.frame_id = "cam_left_optical"
    out.camera_name = "cam_left"
    out.image_height, out.image_width = 720, 1280
    out.segmenter, out.classifier = "mobile_sam:vit_t", "cn_clip:ViT-B-16"
    for i, class_id in enumerate([ScrapInstance.ANGLE, ScrapInstance.PIPE, ScrapInstance.U_CHANNEL,
                                  ScrapInstance.UNKNOWN]):
        inst = ScrapInstance()
        inst.id = f"det-{i}"
        inst.class_id = class_id
        inst.class_name = ["Angle", "Pipe", "U", "Unknown"][i]
        probs = rng.dirichlet(np.ones(7)).astype(np.float32)
        inst.class_scores = probs.tolist() if class_id != ScrapInstance.UNKNOWN else []
        inst.class_score = float(probs.max()) if inst.class_scores else 0.0
        # float32 fields: values a float32 can hold, as the node's are
        inst.detection_score = float(np.float32(rng.uniform(0.3, 1.0)))
        inst.mask_score = float(np.float32(rng.uniform(0.5, 1.0)))
        inst.prompt_box.center.position.x = float(rng.uniform(100, 1000))
        inst.prompt_box.center.position.y = float(rng.uniform(100, 600))
        inst.prompt_box.size_x, inst.prompt_box.size_y = float(rng.uniform(20, 200)), float(rng.uniform(20, 200))
        h, w = int(rng.integers(5, 60)), int(rng.integers(5, 60))
        inst.roi.x_offset, inst.roi.y_offset = int(rng.integers(0, 1000)), int(rng.integers(0, 600))
        inst.roi.height, inst.roi.width = h, w
        mask = (rng.random((h, w)) > 0.4).astype(np.uint8) * 255
        inst.mask.header = out.header
        inst.mask.height, inst.mask.width, inst.mask.encoding, inst.mask.step = h, w, "mono8", w
        inst.mask.data = mask.tobytes()
        inst.area = int(np.count_nonzero(mask))
        emb = rng.normal(size=512).astype(np.float32)
        inst.embedding = (emb / np.linalg.norm(emb)).tolist() if i % 2 == 0 else []
        out.instances.append(inst)
    return out
