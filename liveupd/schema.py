"""Typed records: dataclasses validated from JSON and TOML values, and back.

The configuration, the journal and every other file liveupd reads are
dataclasses; ``load(cls, data)`` checks a parsed value against the class's
annotations and builds it, ``dump(obj)`` turns it back into JSON values.  It
is strict: a value of the wrong type is an error, never converted (``"5"`` is
not 5, ``true`` is not 1), except that an integer is a valid float.  Unknown
keys are errors.  Every problem is collected, each with where it is (``loc``),
so a caller can name the file and key of each.

What it understands: ``str``, ``int``, ``float`` (finite), ``bool``, ``None``,
``Literal``, enums (by value), ``list[T]``, ``tuple[T, ...]``,
``dict[str, T]``, unions (the first branch that fits), dataclasses (nested),
and ``Annotated[T, Rule(...)]`` for limits and checks of one value,
``Annotated[A | B, Tagged("kind")]`` for a union told apart by one key.  A
field's key in the data is its name, or ``metadata={"key": "kebab-name"}``
(``key()`` below); a class's ``_validated(self)`` may raise ``ValueError`` for
what concerns several fields.

It exists so that starting the daemon or ``liveupd --verify`` does not import
a validation library and build its schemas first (issue 19: about 200 ms on a
host, seconds under emulation); the validators are built from the annotations
on first use and kept.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
Loc = tuple[int | str, ...]

KEY = "key"  # field metadata: the name of the field in the data
INTERNAL = "internal"  # field metadata: not in the data (neither loaded nor dumped)


@dataclass(frozen=True)
class Error:
    """One problem: where (keys and list indexes from the top), of what kind, what was
    expected, and the value found (``None`` for a missing key)."""

    loc: Loc
    kind: str  # "missing", "unknown-key", "type", "value", "json"
    msg: str
    input: Any = None


class Invalid(ValueError):
    """The data does not fit the class; ``errors`` lists every problem."""

    def __init__(self, errors: list[Error]) -> None:
        super().__init__("; ".join(f"{where(e.loc)}: {e.msg}" for e in errors[:5]))
        self.errors = errors


@dataclass(frozen=True)
class Rule:
    """Limits of one value, checked after its type: lengths (strings, lists), a pattern
    (strings: the whole string must match it), bounds (numbers), and a ``check``
    that raises ``ValueError`` saying what was expected, or returns the value to keep."""

    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    check: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Tagged:
    """A union of dataclasses told apart by one key, whose default in each is a literal."""

    key: str


def key(name: str) -> dict[str, str]:
    """Field metadata naming the field's key in the data: ``field(metadata=key("x-y"))``."""
    return {KEY: name}


def where(loc: Loc) -> str:
    """``a.b[2].c``; ``(top level)`` for the whole value."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


# ----------------------------------------------------------------- loading --

_BAD = object()  # a value that did not validate (its errors are recorded)
Validator = Callable[[Any, Loc, list[Error]], Any]


def load(cls: type[T], data: Any) -> T:
    """``data`` (parsed JSON or TOML) as a ``cls``; Invalid listing every problem."""
    errors: list[Error] = []
    value = validator(cls)(data, (), errors)
    if errors:
        raise Invalid(errors)
    return value  # type: ignore[no-any-return]


def load_json(cls: type[T], text: str | bytes) -> T:
    """``load`` of a JSON document; Invalid (kind ``json``) when it is not JSON."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8
        raise Invalid([Error((), "json", f"Invalid JSON: {e}")]) from None
    return load(cls, data)


_cache: dict[Any, Validator] = {}
_lock = threading.RLock()


def validator(tp: Any) -> Validator:
    """The validator of a type (built once; TypeError for a type it does not know)."""
    found = _cache.get(tp)
    if found is not None:
        return found
    with _lock:
        try:
            return _cache[tp]
        except KeyError:
            pass
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            # Registered before its fields are built: a class may contain itself.
            holder: list[Validator] = []

            def forward(v: Any, loc: Loc, errs: list[Error]) -> Any:
                return holder[0](v, loc, errs)

            _cache[tp] = forward
            holder.append(_dataclass(tp))
            _cache[tp] = holder[0]
            return holder[0]
        built = _build(tp)
        _cache[tp] = built
        return built


def describe(tp: Any) -> str:
    """What a value of ``tp`` is, for messages: "a string", "a list", ..."""
    origin = get_origin(tp)
    if origin is Annotated:
        return describe(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp))
    if origin is Literal:
        return _choices(get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a table"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _choices([m.value for m in tp])
    return _NAMES.get(tp, "an object")


_NAMES: dict[Any, str] = {
    str: "a string",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    type(None): "null",
    Any: "anything",
}


def _choices(values: Any) -> str:
    shown = [repr(v) if not isinstance(v, bool) else str(v).lower() for v in values]
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " or " + shown[-1]


def _type_error(expected: str) -> Validator:
    def fail(v: Any, loc: Loc, errs: list[Error]) -> Any:
        errs.append(Error(loc, "type", f"Input should be {expected}", v))
        return _BAD

    return fail


def _build(tp: Any) -> Validator:  # one case per kind of type
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return lambda v, loc, errs: v
    if tp is str:
        return _exact(str, "a valid string")
    if tp is bool:
        return _exact(bool, "a valid boolean")
    if tp is int:
        return _simple(lambda v: isinstance(v, int) and not isinstance(v, bool), "a valid integer")
    if tp is float:
        return _float
    if tp is type(None):
        return _simple(lambda v: v is None, "null")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum(tp)
    if origin is Literal:
        return _literal(args)
    if origin is Annotated:
        return _annotated(args[0], args[1:])
    if origin in (Union, types.UnionType):
        return _union(args)
    if origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return _sequence(validator(args[0]), tuple if origin is tuple else list)
    if origin is tuple and args == ():
        return _sequence(validator(Any), tuple)
    if origin is dict and args and args[0] is str:
        return _dict(validator(args[1]))
    raise TypeError(f"liveupd.schema cannot validate {tp!r}")


def _exact(tp: type, expected: str) -> Validator:
    """Values of type ``tp`` (subclasses too: a StrEnum member is a str)."""

    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        if type(v) is tp or isinstance(v, tp):
            return v
        errs.append(Error(loc, "type", f"Input should be {expected}", v))
        return _BAD

    return check


def _simple(ok: Callable[[Any], bool], expected: str) -> Validator:
    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        if ok(v):
            return v
        errs.append(Error(loc, "type", f"Input should be {expected}", v))
        return _BAD

    return check


def _float(v: Any, loc: Loc, errs: list[Error]) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float):
        errs.append(Error(loc, "type", "Input should be a valid number", v))
        return _BAD
    if isinstance(v, float) and not math.isfinite(v):
        errs.append(Error(loc, "value", "Input should be a finite number", v))
        return _BAD
    return float(v)


def _enum(tp: type[enum.Enum]) -> Validator:
    by_value = {m.value: m for m in tp}
    expected = f"Input should be {_choices(list(by_value))}"

    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        if isinstance(v, tp):
            return v
        if isinstance(v, str | int) and not isinstance(v, bool):
            found = by_value.get(v)
            if found is not None:
                return found
        errs.append(Error(loc, "value", expected, v))
        return _BAD

    return check


def _literal(values: tuple[Any, ...]) -> Validator:
    expected = f"Input should be {_choices(values)}"

    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        for allowed in values:
            if type(v) is type(allowed) and v == allowed:
                return v
        errs.append(Error(loc, "value", expected, v))
        return _BAD

    return check


def _annotated(tp: Any, metas: tuple[Any, ...]) -> Validator:
    tags = [m for m in metas if isinstance(m, Tagged)]
    inner = _tagged(tp, tags[0].key) if tags else validator(tp)
    rules = [m for m in metas if isinstance(m, Rule)]
    if not rules:
        return inner

    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        before = len(errs)
        value = inner(v, loc, errs)
        if len(errs) > before:
            return _BAD
        for rule in rules:
            value = _apply(rule, value, loc, errs, v)
            if value is _BAD:
                return _BAD
        return value

    return check


def _apply(rule: Rule, value: Any, loc: Loc, errs: list[Error], given: Any) -> Any:
    """``value`` (``given``, after its type's check: 0 may be 0.0 now) within ``rule``."""

    def fail(msg: str) -> Any:
        errs.append(Error(loc, "value", msg, given))
        return _BAD

    if isinstance(value, str | list | tuple):
        what = "String" if isinstance(value, str) else "List"
        unit = "character" if isinstance(value, str) else "item"
        n = len(value)
        if rule.min_length is not None and n < rule.min_length:
            s = "" if rule.min_length == 1 else "s"
            return fail(f"{what} should have at least {rule.min_length} {unit}{s}, not {n}")
        if rule.max_length is not None and n > rule.max_length:
            s = "" if rule.max_length == 1 else "s"
            return fail(f"{what} should have at most {rule.max_length} {unit}{s}, not {n}")
    if (
        rule.pattern is not None
        and isinstance(value, str)
        and not re.fullmatch(rule.pattern, value)
    ):
        return fail(f"String should match pattern '{rule.pattern}'")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if rule.gt is not None and not value > rule.gt:
            return fail(f"Input should be greater than {rule.gt}")
        if rule.ge is not None and not value >= rule.ge:
            return fail(f"Input should be greater than or equal to {rule.ge}")
        if rule.le is not None and not value <= rule.le:
            return fail(f"Input should be less than or equal to {rule.le}")
    if rule.check is not None:
        try:
            return rule.check(value)
        except ValueError as e:
            return fail(str(e))
    return value


def _union(branches: tuple[Any, ...]) -> Validator:
    none = type(None) in branches
    others = [b for b in branches if b is not type(None)]
    checks = [validator(b) for b in others]
    expected = f"Input should be {' or '.join(describe(b) for b in branches)}"

    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        if v is None and none:
            return None
        if len(checks) == 1:
            if v is None:  # an optional value given as null where null is not allowed
                errs.append(Error(loc, "type", expected, v))
                return _BAD
            return checks[0](v, loc, errs)
        for c in checks:
            scratch: list[Error] = []
            value = c(v, loc, scratch)
            if not scratch:
                return value
        errs.append(Error(loc, "type", expected, v))
        return _BAD

    return check


def _tagged(tp: Any, tag: str) -> Validator:
    branches = [b for b in get_args(tp) if b is not type(None)]
    by_tag: dict[Any, type] = {}
    for b in branches:
        f = {f.name: f for f in dataclasses.fields(b)}.get(tag)
        if f is None or f.default is dataclasses.MISSING:
            raise TypeError(f"{b.__name__} has no default for its tag {tag!r}")
        by_tag[f.default] = b
    expected = f"expected {tag!r} to be {_choices(list(by_tag))}"
    none = type(None) in get_args(tp)

    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        if v is None and none:
            return None
        if isinstance(v, tuple(branches)):
            return v
        if not isinstance(v, Mapping):
            errs.append(Error(loc, "type", "Input should be an object", v))
            return _BAD
        if tag not in v:
            errs.append(Error((*loc, tag), "missing", "required key is missing"))
            return _BAD
        b = by_tag.get(v[tag]) if isinstance(v[tag], str) else None
        if b is None:
            errs.append(Error((*loc, tag), "value", expected, v[tag]))
            return _BAD
        return validator(b)(v, loc, errs)

    return check


def _sequence(item: Validator, out: type[list[Any]] | type[tuple[Any, ...]]) -> Validator:
    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        if not isinstance(v, list | tuple):
            errs.append(Error(loc, "type", "Input should be a valid list", v))
            return _BAD
        before = len(errs)
        values = [item(x, (*loc, i), errs) for i, x in enumerate(v)]
        return _BAD if len(errs) > before else out(values)

    return check


def _dict(item: Validator) -> Validator:
    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        if not isinstance(v, Mapping):
            errs.append(Error(loc, "type", "Input should be a valid dictionary", v))
            return _BAD
        before = len(errs)
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                errs.append(Error((*loc, str(k)), "type", "Keys should be strings", k))
                continue
            out[k] = item(x, (*loc, k), errs)
        return _BAD if len(errs) > before else out

    return check


@dataclass(frozen=True)
class _Field:
    name: str  # the attribute
    key: str  # in the data
    check: Validator
    required: bool


def _dataclass(cls: type) -> Validator:
    hints = get_type_hints(cls, include_extras=True)
    fields = [
        _Field(
            f.name,
            f.metadata.get(KEY, f.name),
            validator(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
        if f.init and not f.metadata.get(INTERNAL)
    ]
    by_key = {f.key: (f.name, f.check) for f in fields}
    required = [f.key for f in fields if f.required]
    after: Callable[[Any], None] | None = getattr(cls, "_validated", None)

    def check(v: Any, loc: Loc, errs: list[Error]) -> Any:
        # The journal is read through here line by line: the common case first
        # (a dict from JSON), each key looked up once.
        if type(v) is not dict:
            if isinstance(v, cls):
                return v
            if not isinstance(v, Mapping):
                errs.append(Error(loc, "type", "Input should be an object", v))
                return _BAD
        before = len(errs)
        kwargs = {}
        for k, x in v.items():
            found = by_key.get(k)
            if found is None:
                errs.append(Error((*loc, str(k)), "unknown-key", "unknown key", x))
                continue
            kwargs[found[0]] = found[1](x, (*loc, k), errs)
        for key in required:
            if key not in v:
                errs.append(Error((*loc, key), "missing", "required key is missing"))
        if len(errs) > before:
            return _BAD
        obj = cls(**kwargs)
        if after is not None:
            try:
                after(obj)
            except ValueError as e:
                errs.append(Error(loc, "value", str(e), v))
                return _BAD
        return obj

    return check


# ----------------------------------------------------------------- dumping --


def dump(obj: Any, *, exclude_none: bool = False, by_key: bool = False) -> Any:
    """``obj`` as JSON values: dataclasses as objects (field names, or their keys in the
    data with ``by_key``), enums by value, tuples as lists; None fields left out with
    ``exclude_none``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if not f.init or f.metadata.get(INTERNAL):
                continue
            value = getattr(obj, f.name)
            if value is None and exclude_none:
                continue
            name = f.metadata.get(KEY, f.name) if by_key else f.name
            out[name] = dump(value, exclude_none=exclude_none, by_key=by_key)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [dump(x, exclude_none=exclude_none, by_key=by_key) for x in obj]
    if isinstance(obj, dict):
        return {k: dump(x, exclude_none=exclude_none, by_key=by_key) for k, x in obj.items()}
    return obj


def dump_json(obj: Any, *, exclude_none: bool = True) -> bytes:
    """One compact line of JSON (UTF-8), None fields left out unless told otherwise."""
    return json.dumps(
        dump(obj, exclude_none=exclude_none), separators=(",", ":"), ensure_ascii=False
    ).encode()
