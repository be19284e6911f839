"""Every config key is read: a field of a config dataclass that no code reads is an error.

The walk starts at every schema a user writes (the experiment, each registered backend's config, the caption LM's
and the synthetic world's) and follows nested dataclasses. A field counts as read when some module of the package
or tools/ reads an attribute of that name outside a ``__post_init__`` (validation is not use); a name shared by
fields of several schemas is read for all of them, so this check is a floor, not a proof.
"""
import ast
import dataclasses
import typing
from pathlib import Path

from videoqf.backends import BACKENDS
from videoqf.data.synthetic import SyntheticConfig
from videoqf.experiment import ExperimentConfig
from videoqf.llm.config import CaptionLMConfig

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = [ExperimentConfig, CaptionLMConfig, SyntheticConfig, *(e.config_class for e in BACKENDS.values())]
# read through a computed name, which the walk cannot see: field -> where
COMPUTED_READS = {("ObjectivesConfig", "vtc_weight"): "ObjectivesConfig.weights: getattr(self, f'{name}_weight')"}


def config_classes(roots) -> list[type]:
    seen: list[type] = []

    def walk(tp) -> None:
        for arg in typing.get_args(tp):
            walk(arg)
        if dataclasses.is_dataclass(tp) and tp not in seen:
            seen.append(tp)
            for hint in typing.get_type_hints(tp).values():
                walk(hint)

    for root in roots:
        walk(root)
    return seen


class _Reads(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name != "__post_init__":
            self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.names.add(node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant):
            self.names.add(node.args[1].value)
        self.generic_visit(node)


def attribute_reads() -> set[str]:
    reads = _Reads()
    for path in [*(ROOT / "videoqf").rglob("*.py"), *(ROOT / "tools").glob("*.py")]:
        reads.visit(ast.parse(path.read_text(), filename=str(path)))
    return reads.names


def unread_fields(roots, reads: set[str]) -> list[str]:
    return [f"{cls.__name__}.{f.name}" for cls in config_classes(roots) for f in dataclasses.fields(cls)
            if f.name not in reads and (cls.__name__, f.name) not in COMPUTED_READS]


def test_every_config_field_is_read_somewhere():
    classes = config_classes(SCHEMAS)
    assert {"ExperimentConfig", "StageConfig", "DataConfig", "QFormerConfig", "CascadedConfig"} <= {
        c.__name__ for c in classes}
    assert unread_fields(SCHEMAS, attribute_reads()) == []


def test_a_field_nothing_reads_is_found():
    @dataclasses.dataclass
    class Section:
        read_me: int = 0
        nobody_reads_this_key: int = 0

    @dataclasses.dataclass
    class Schema:
        section: Section = dataclasses.field(default_factory=Section)

    assert unread_fields([Schema], {"read_me", "section"}) == ["Section.nobody_reads_this_key"]
