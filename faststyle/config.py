"""Loss-network layer weights: YAML files in ``configs/`` loaded into a typed object."""

from __future__ import annotations

import ast
import math
import operator
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from faststyle.errors import FaststyleError

OPTIONAL_KEYS = ("description",)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _number(value: Any, where: str) -> float:
    """A weight as written in a config: a number, or simple arithmetic such as ``1-2e-4``; finite and 0 or more."""
    number = _evaluate(value, where)
    if not (math.isfinite(number) and number >= 0):
        raise FaststyleError(f"{where}: {value!r} is not a weight; weights are finite numbers of 0 or more")
    return number


def _evaluate(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise FaststyleError(f"{where}: expected a number, got {value!r}")

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError

    try:
        return float(value) if isinstance(value, (int, float)) else ev(ast.parse(str(value), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError):
        raise FaststyleError(f"{where}: {value!r} is not a number (write e.g. 0.2, 2e-4 or 1-2e-4)") from None
    except OverflowError:
        raise FaststyleError(f"{where}: {value!r} is too large for a weight") from None


@dataclass(frozen=True)
class LayerConfig:
    """Which layers of which backbone carry content and style, and with what weight."""

    backbone: str
    content_layers: dict[str, float]
    style_layers: dict[str, float]
    name: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.source or self.name or "LayerConfig"
        if not isinstance(self.backbone, str) or not self.backbone:
            raise FaststyleError(f"{where}: backbone must be a loss network's name, not {self.backbone!r}")
        for key in ("content_layers", "style_layers"):
            table = getattr(self, key)
            if not isinstance(table, dict) or not table:
                raise FaststyleError(f"{where}: {key} must map layer names to weights, e.g. {{'conv4_2': 1.0}}")
            for layer, weight in table.items():
                if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                    raise FaststyleError(
                        f"{where}: {key}.{layer}: {weight!r} is not a weight; weights are finite numbers of 0 or more"
                    )
                if not math.isfinite(weight):
                    raise FaststyleError(f"{where}: {key}.{layer}: {weight!r} is not a finite weight")
        if not any(self.content_layers.values()) and not any(self.style_layers.values()):
            raise FaststyleError(
                f"{where}: every layer's weight is 0, so there is nothing to optimise; give at least one content or "
                "style layer a weight above 0"
            )

    @property
    def layers(self) -> list[str]:
        """Every layer the config reads, content first, without repeats."""
        return list(dict.fromkeys([*self.content_layers, *self.style_layers]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backbone": self.backbone,
            "content_layers": dict(self.content_layers),
            "style_layers": dict(self.style_layers),
        }


def layer_weights(recorded: Any) -> dict[str, Any]:
    """A layer table as ``LayerConfig.to_dict`` records it (in model files and checkpoints) without its name: what
    makes two configs the same, whatever their files are called."""
    recorded = recorded if isinstance(recorded, dict) else {}
    return {key: recorded.get(key) for key in ("backbone", "content_layers", "style_layers")}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: its keys may be overridden here
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            repeated = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a name", key_node.start_mark) from None
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice in one mapping; keep one", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def builtin_config_dir() -> Path:
    return Path(str(resources.files("faststyle") / "configs"))


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in builtin_config_dir().glob("*.yaml"))


def parse_config(data: Any, name: str = "", source: str = "") -> LayerConfig:
    where = source or name or "config"
    if not isinstance(data, dict):
        raise FaststyleError(f"{where}: expected a mapping with backbone, content_layers and style_layers")
    missing = [k for k in ("backbone", "content_layers", "style_layers") if k not in data]
    if missing:
        raise FaststyleError(f"{where}: missing {', '.join(missing)}")
    layers: dict[str, dict[str, float]] = {}
    for key in ("content_layers", "style_layers"):
        table = data[key]
        if not isinstance(table, dict) or not table:
            raise FaststyleError(f"{where}: {key} must map layer names to weights, e.g. conv4_2: 1")
        layers[key] = {str(k): _number(v, f"{where}: {key}.{k}") for k, v in table.items()}
    extra = {k: v for k, v in data.items() if k not in ("backbone", "content_layers", "style_layers")}
    unknown = sorted(str(k) for k in extra if k not in OPTIONAL_KEYS)
    if unknown:
        raise FaststyleError(
            f"{where}: unknown key(s) {', '.join(unknown)}; a config holds backbone, content_layers, style_layers "
            "(and a description). Loss weights are options: --content-weight, --style-weight, --tv-weight, "
            "gatys --ratio"
        )
    return LayerConfig(
        backbone=str(data["backbone"]),
        content_layers=layers["content_layers"],
        style_layers=layers["style_layers"],
        name=name,
        source=source,
        extra=extra,
    )


def load_config(name_or_path: str | Path) -> LayerConfig:
    """A built-in config by name (``vgg16``, ``googlenet_pool``, …) or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.is_file():
        path = builtin_config_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            raise FaststyleError(
                f"no built-in config {str(name_or_path)!r}; choose one of {', '.join(builtin_configs())} "
                "or pass the path of a YAML file"
            )
    if not path.exists():
        builtin = f"; the built-in config is named {path.stem} (no .yaml)" if path.stem in builtin_configs() else ""
        raise FaststyleError(f"config file {path} does not exist{builtin}")
    if path.is_dir():
        raise FaststyleError(f"config {path} is a folder; pass a YAML file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise FaststyleError(f"{path}: not valid YAML ({exc})") from None
    except UnicodeDecodeError:
        raise FaststyleError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise FaststyleError(f"cannot read {path} ({exc.strerror or exc})") from None
    return parse_config(data, name=path.stem, source=str(path))


def default_config(backbone: str) -> LayerConfig:
    """The documented layer weights for a backbone (the built-in file, whatever lies in the working directory)."""
    from faststyle.lossnets.registry import available_lossnets

    if backbone not in available_lossnets():  # named as one: the config files' names are not loss networks
        is_config = backbone in builtin_configs() or bool(Path(backbone).suffix)
        hint = "; a layer config is given with --config (train, gatys, compare, bench lossnet and gatys)"
        names = ", ".join(available_lossnets())
        raise FaststyleError(f"unknown loss network {backbone!r}; choose one of {names}{hint if is_config else ''}")
    builtin = builtin_config_dir() / f"{backbone}.yaml"
    return load_config(builtin if builtin.is_file() else backbone)


ConfigSpec = str | os.PathLike[str] | LayerConfig


def _given(config: ConfigSpec | None) -> LayerConfig | None:
    if config is None or isinstance(config, LayerConfig):
        return config
    return load_config(Path(config) if isinstance(config, os.PathLike) else config) if config else None


def backbone_for(backbone: str | None, config: ConfigSpec | None) -> str:
    """``backbone`` as given; left out (None), the loss network that ``config`` is for, and without either VGG16."""
    if backbone:
        return backbone
    given = _given(config)
    return given.backbone if given else "vgg16"


def layer_config(backbone: str, config: ConfigSpec | None) -> LayerConfig:
    """``config`` (a built-in name, a YAML file or a loaded config), or the backbone's documented one; refused when
    it is for another loss network than ``backbone``."""
    chosen = _given(config) or default_config(backbone)
    if chosen.backbone != backbone:
        raise FaststyleError(
            f"config {chosen.name!r} is for {chosen.backbone}, not --backbone {backbone}; leave out --backbone to use "
            f"the config's, or pick a config for {backbone}"
        )
    return chosen
