"""Luigi parameters generated from the config dataclasses' settings (pipeline/common/settings.py).

A default, the allowed values and the help text are written once, on the dataclass field; this
module only translates them into Luigi parameter objects, and task parameter values back into
field values. Tasks that need another task's settings (TrainLHG and EvaluateLHG need every
BuildSplits setting to require the same dataset) mix in the same generated class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import luigi

from pipeline.common.settings import Option, options


def luigi_parameter(opt: Option) -> luigi.Parameter:
    """The Luigi parameter of one setting: its type, default and help come from the dataclass field."""
    common = {"description": opt.spec.help, "positional": False}
    if opt.spec.preset_override:
        optional = {int: luigi.OptionalIntParameter, float: luigi.OptionalFloatParameter}
        return optional.get(opt.kind, luigi.OptionalParameter)(default=None, **common)
    if opt.spec.choices is not None:
        return luigi.ChoiceParameter(choices=list(opt.spec.choices), default=opt.text(opt.default), **common)
    if opt.kind is bool:
        return luigi.BoolParameter(default=opt.default, **common)
    if opt.kind is int:
        return luigi.IntParameter(default=opt.default, **common)
    if opt.kind is float:
        return luigi.FloatParameter(default=opt.default, **common)
    return luigi.Parameter(default=opt.text(opt.default), **common)  # str, or a tuple as comma-separated text


def settings_mixin(name: str, *config_classes: type, rename: Mapping[str, str] | None = None) -> type:
    """A mixin class holding one Luigi parameter per setting of `config_classes` (first one wins).

    `rename` maps an option name to the parameter name used here (when a task already uses the
    name for something else, e.g. TrainLHG's --seed is the training seed).
    """
    rename = rename or {}
    attrs: dict[str, Any] = {"__doc__": f"Luigi parameters of {', '.join(c.__name__ for c in config_classes)}."}
    for cls in config_classes:
        for opt in options(cls):
            attrs.setdefault(rename.get(opt.name, opt.name), luigi_parameter(opt))
    return type(name, (), attrs)


def option_values(task: luigi.Task, *config_classes: type, rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A task's values of the settings of `config_classes`, keyed by option name (undoing `rename`)."""
    rename = rename or {}
    return {opt.name: getattr(task, rename.get(opt.name, opt.name)) for cls in config_classes for opt in options(cls)}


def mixin_values(task: luigi.Task, mixin: type) -> dict[str, Any]:
    """A task's values of the parameters a generated mixin defines, keyed by parameter name."""
    return {name: getattr(task, name) for name in dir(mixin) if isinstance(getattr(mixin, name), luigi.Parameter)}
