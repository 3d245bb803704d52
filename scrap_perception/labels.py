"""The shape classes: ids, English names, Chinese text and prompt templates for CN-CLIP."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

# Mirrors ScrapInstance.UNKNOWN: no class, or the best probability is under the threshold.
UNKNOWN_ID = 255
UNKNOWN_NAME = "Unknown"

# "a photo of {}" style templates; the paper prompts CN-CLIP in Chinese.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "一张{}的照片。",
    "废钢堆中的{}。",
    "一块{}废钢的照片。",
)


@dataclass(frozen=True)
class Label:
    """One class: ``id`` is the ScrapInstance constant, ``text`` the Chinese name fed to CN-CLIP."""

    id: int
    name: str
    text: str
    templates: tuple[str, ...] = field(default=DEFAULT_TEMPLATES)

    def prompts(self) -> list[str]:
        """The texts whose features are averaged into this class's text feature."""
        return [t.format(self.text) for t in self.templates]


# Class ids follow ScrapInstance.msg (ANGLE=0 ... U_CHANNEL=6).
DEFAULT_LABELS: tuple[Label, ...] = (
    Label(0, "Angle", "角钢"),
    Label(1, "Bar", "圆钢"),
    Label(2, "Billet", "钢坯"),
    Label(3, "H", "H型钢"),
    Label(4, "Pipe", "钢管"),
    Label(5, "Plate", "钢板"),
    Label(6, "U", "槽钢"),
)


class LabelError(ValueError):
    """A label set that cannot be used."""


def validate_labels(labels: Sequence[Label]) -> tuple[Label, ...]:
    """Checks ids are unique uint8 values other than UNKNOWN, and names/texts/templates are usable."""
    if not labels:
        raise LabelError("labels: the label set is empty")
    seen_ids: dict[int, str] = {}
    seen_names: set[str] = set()
    for label in labels:
        if not isinstance(label.id, int) or not 0 <= label.id < UNKNOWN_ID:
            raise LabelError(f"labels: id {label.id!r} of {label.name!r} must be an integer in 0..254")
        if label.id in seen_ids:
            raise LabelError(f"labels: duplicate id {label.id} ({seen_ids[label.id]!r} and {label.name!r})")
        if not label.name.strip():
            raise LabelError(f"labels: label id {label.id} has an empty name")
        if label.name in seen_names:
            raise LabelError(f"labels: duplicate name {label.name!r}")
        if not label.text.strip():
            raise LabelError(f"labels: label {label.name!r} has empty text")
        if not label.templates:
            raise LabelError(f"labels: label {label.name!r} has no templates")
        for t in label.templates:
            if "{}" not in t:
                raise LabelError(f"labels: template {t!r} of {label.name!r} has no '{{}}' for the text")
        seen_ids[label.id] = label.name
        seen_names.add(label.name)
    return tuple(labels)


def labels_from_config(entries: Iterable[Mapping[str, Any]],
                       templates: Sequence[str] | None = None) -> tuple[Label, ...]:
    """Builds labels from dicts ``{id, name, text[, templates]}`` (YAML config, dataset categories)."""
    out = []
    for i, e in enumerate(entries):
        missing = {"id", "name", "text"} - set(e)
        if missing:
            raise LabelError(f"labels[{i}]: missing {sorted(missing)}")
        tpl = tuple(e.get("templates") or templates or DEFAULT_TEMPLATES)
        out.append(Label(int(e["id"]), str(e["name"]), str(e["text"]), tpl))
    return validate_labels(out)


def labels_from_strings(specs: Sequence[str]) -> tuple[Label, ...]:
    """Parses ``"id:name:text"`` strings (the ROS parameter form)."""
    entries = []
    for s in specs:
        parts = s.split(":", 2)
        if len(parts) != 3 or not parts[0].strip().isdigit():
            raise LabelError(f"labels: {s!r} is not 'id:name:text'")
        entries.append({"id": int(parts[0]), "name": parts[1].strip(), "text": parts[2].strip()})
    return labels_from_config(entries)


def name_of(class_id: int, labels: Sequence[Label] = DEFAULT_LABELS) -> str:
    for label in labels:
        if label.id == class_id:
            return label.name
    return UNKNOWN_NAME
