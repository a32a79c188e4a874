"""One source for every user-facing setting.

A setting's default, allowed values, help text and validity check are written once, on its config
dataclass field (`setting(...)`). The Luigi parameters in `tasks/` are generated from these fields
(`tasks/params.py`), and the command-line values come back through `Option.value`, so the CLI, the
config objects and the help text cannot drift apart. Validation raises `SettingError` naming the
command-line option, before any work is scheduled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_KEY = "lhg_setting"

Check = Callable[[Any], "str | None"]  # returns what is wrong with a value, or None


class SettingError(ValueError):
    """A setting has a value the pipeline cannot use; the message names the command-line option."""


@dataclass(frozen=True)
class Setting:
    """Field metadata of a user-facing setting (see `setting`)."""

    help: str
    option: str = ""  # Luigi parameter name; "" = the field name
    choices: Mapping[str, Any] | None = None  # command-line text -> field value
    item: type | None = None  # tuple settings: element type, written comma-separated on the command line
    check: Check | None = None
    preset_override: bool = False  # command-line default None = keep the preset's value


def setting(default: Any, help: str, *, option: str = "", choices: Mapping[str, Any] | tuple[str, ...] | None = None,
            item: type | None = None, check: Check | None = None, preset_override: bool = False) -> Any:
    """A dataclass field that is also a command-line option (default, help and checks in one place)."""
    if isinstance(choices, tuple):
        choices = {c: c for c in choices}
    meta = Setting(help=help, option=option, choices=choices, item=item, check=check,
                   preset_override=preset_override)
    return field(default=default, metadata={_KEY: meta})


@dataclass(frozen=True)
class Option:
    """One user-facing setting of a config class: its field, command-line name, default and metadata."""

    field: str
    name: str  # Luigi parameter name (python style); the command line spells it with dashes
    default: Any  # the dataclass default, as a field value
    spec: Setting

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> type:
        """bool, int, float, str or tuple: the Luigi parameter type (tuples are comma-separated text)."""
        if self.spec.choices is not None:
            return str
        return type(self.default) if isinstance(self.default, bool | int | float | str | tuple) else str

    def text(self, value: Any) -> str:
        """A field value as the user writes it on the command line."""
        if self.spec.choices is not None:
            for text, choice in self.spec.choices.items():
                if choice == value:
                    return text
            return str(value)
        if isinstance(value, tuple | list):
            return ",".join(str(v) for v in value)
        return str(value)

    def value(self, raw: Any) -> Any:
        """The field value for a Luigi parameter value; SettingError names the option when it is unusable."""
        if self.spec.choices is not None:
            if raw not in self.spec.choices:
                raise SettingError(f"{self.flag} {raw!r}: choose one of {list(self.spec.choices)}")
            return self.spec.choices[raw]
        if isinstance(self.default, tuple):
            item = self.spec.item or str
            try:
                return tuple(item(x.strip()) for x in str(raw).split(",") if x.strip())
            except ValueError:
                raise SettingError(f"{self.flag} {raw!r}: expected comma-separated {item.__name__} values") from None
        return raw

    def problem(self, value: Any) -> str | None:
        return self.spec.check(value) if self.spec.check else None


def options(cls: type) -> list[Option]:
    """The user-facing settings of a config dataclass, in field order."""
    found = []
    for f in fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is not None:
            found.append(Option(field=f.name, name=spec.option or f.name, default=f.default, spec=spec))
    return found


def field_values(cls: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Field keyword arguments of `cls` from command-line values keyed by option name.

    Options missing from `raw`, and preset overrides left at None, keep the dataclass default.
    """
    values = {}
    for opt in options(cls):
        if opt.name in raw and not (opt.spec.preset_override and raw[opt.name] is None):
            values[opt.field] = opt.value(raw[opt.name])
    return values


def check_settings(config: Any) -> None:
    """Run every setting's check on a config instance; raise SettingError naming the first bad option."""
    for opt in options(type(config)):
        value = getattr(config, opt.field)
        problem = opt.problem(value)
        if problem:
            raise SettingError(f"{opt.flag} {opt.text(value)}: {problem}")


# ---- checks (each returns the problem or None) ----------------------------------------------------------


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        number = _number(value)
        return None if number is not None and number >= low else f"must be a finite number >= {low:g}"
    return check


def greater_than(low: float) -> Check:
    def check(value: Any) -> str | None:
        number = _number(value)
        return None if number is not None and number > low else f"must be a finite number > {low:g}"
    return check


def fraction(value: Any) -> str | None:
    number = _number(value)
    return None if number is not None and 0.0 <= number <= 1.0 else "must be a number between 0 and 1"


def split_shares(values: Any) -> str | None:
    """train,valid,test shares: three finite non-negative numbers that sum to 1."""
    numbers = [_number(v) for v in values]
    if len(numbers) != 3 or any(n is None or n < 0 for n in numbers):
        return "expected three non-negative numbers train,valid,test"
    if abs(sum(numbers) - 1.0) > 1e-6:
        return f"the train,valid,test shares must sum to 1 (they sum to {sum(numbers):g})"
    return None


def add_setting_arguments(parser: Any, cls: type) -> None:
    """One argparse option per setting of `cls` (the command-line twin of `tasks.params.settings_mixin`):
    same flag, default and help, so a subcommand and its Luigi task cannot drift apart."""
    for opt in options(cls):
        kwargs: dict[str, Any] = {"dest": opt.name, "help": opt.spec.help}
        if opt.spec.choices is not None:
            kwargs.update(choices=list(opt.spec.choices), default=opt.text(opt.default))
        elif opt.kind is bool:
            kwargs.update(action="store_true" if not opt.default else "store_false", default=opt.default)
        elif opt.kind in (int, float):
            kwargs.update(type=opt.kind, default=opt.default)
        else:
            kwargs.update(default=opt.text(opt.default))
        parser.add_argument(opt.flag, **kwargs)


def config_from_arguments(cls: type, namespace: Any) -> Any:
    """A `cls` instance from parsed `add_setting_arguments` options (its checks run in __post_init__)."""
    return cls(**field_values(cls, vars(namespace)))
