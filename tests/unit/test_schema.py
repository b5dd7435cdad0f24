"""liveupd.schema: strict validation of JSON/TOML values into dataclasses, and back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Literal

import pytest

from liveupd import schema
from liveupd.schema import Error, Invalid, Rule, Tagged, dump, dump_json, load, load_json


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


def _positive_even(v: int) -> int:
    if v % 2:
        raise ValueError("expected an even number")
    return v


@dataclass(frozen=True)
class Leaf:
    name: Annotated[str, Rule(min_length=1, max_length=8, pattern=r"^[a-z]+$")]
    count: Annotated[int, Rule(ge=0, le=10)] = 0


@dataclass(frozen=True)
class Hook:
    kind: Literal["hook"] = "hook"
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Thaw:
    kind: Literal["thaw"] = "thaw"
    mounts: tuple[str, ...] = ()


Undo = Annotated[Hook | Thaw, Tagged("kind")]


@dataclass(frozen=True)
class Top:
    title: str
    ratio: Annotated[float, Rule(gt=0)] = 1.0
    flag: bool = False
    colour: Colour = Colour.RED
    mode: Literal["auto", "off"] = "auto"
    leaves: list[Leaf] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    either: bool | list[str] = False
    maybe: int | None = None
    undo: Undo | None = None
    even: Annotated[int, Rule(check=_positive_even)] = 0
    kebab_key: str = field(default="", metadata=schema.key("kebab-key"))
    note: str = field(default="", metadata={schema.INTERNAL: True})

    def _validated(self) -> None:
        if self.title == "forbidden":
            raise ValueError("this title is not allowed")


def _errors(cls: type, data: object) -> list[Error]:
    with pytest.raises(Invalid) as e:
        load(cls, data)
    return e.value.errors


def test_a_full_record_round_trips() -> None:
    data = {
        "title": "t",
        "ratio": 2,
        "flag": True,
        "colour": "blue",
        "mode": "off",
        "leaves": [{"name": "ab", "count": 3}],
        "tags": {"a": "b"},
        "either": ["x"],
        "maybe": 5,
        "undo": {"kind": "thaw", "mounts": ["/", "/data"]},
        "even": 4,
        "kebab-key": "k",
    }
    top = load(Top, data)
    assert top == Top(
        title="t",
        ratio=2.0,
        flag=True,
        colour=Colour.BLUE,
        mode="off",
        leaves=[Leaf("ab", 3)],
        tags={"a": "b"},
        either=["x"],
        maybe=5,
        undo=Thaw(mounts=("/", "/data")),
        even=4,
        kebab_key="k",
    )
    assert isinstance(top.ratio, float) and isinstance(top.undo, Thaw)
    assert isinstance(top.undo.mounts, tuple)
    # Back: by key, as the data had it; enums by value, tuples as lists.
    dumped = dump(top, by_key=True)
    assert "note" not in dumped
    assert dumped == {**data, "ratio": 2.0}
    assert load(Top, dumped) == top
    # Field names without by_key; None left out with exclude_none, recursively.
    assert "kebab_key" in dump(top)
    assert json.loads(dump_json(Top(title="t"))) == {
        k: v for k, v in dump(Top(title="t")).items() if v is not None
    }
    assert "maybe" not in json.loads(dump_json(Top(title="t")))


def test_defaults_fill_what_is_missing() -> None:
    assert load(Top, {"title": "x"}) == Top(title="x")


def test_every_problem_is_reported_with_its_place() -> None:
    errors = _errors(
        Top,
        {
            "ratio": 0,
            "colour": "green",
            "leaves": [{"name": "ok"}, {"name": "UP", "count": 11, "extra": 1}],
            "typo": 1,
        },
    )
    found = {(schema.where(e.loc), e.kind, e.msg) for e in errors}
    assert found == {
        ("ratio", "value", "Input should be greater than 0"),
        ("colour", "value", "Input should be 'red' or 'blue'"),
        ("leaves[1].name", "value", "String should match pattern '^[a-z]+$'"),
        ("leaves[1].count", "value", "Input should be less than or equal to 10"),
        ("leaves[1].extra", "unknown-key", "unknown key"),
        ("typo", "unknown-key", "unknown key"),
        ("title", "missing", "required key is missing"),
    }
    bad = next(e for e in errors if e.loc == ("colour",))
    assert bad.input == "green"
    # The value as the data had it (0), not as validated (0.0).
    ratio = next(e for e in errors if e.loc == ("ratio",))
    assert ratio.input == 0 and isinstance(ratio.input, int)


@pytest.mark.parametrize(
    ("data", "loc", "msg"),
    [
        ({"title": 3}, "title", "Input should be a valid string"),
        ({"title": "t", "flag": 1}, "flag", "Input should be a valid boolean"),
        ({"title": "t", "flag": "true"}, "flag", "Input should be a valid boolean"),
        ({"title": "t", "maybe": True}, "maybe", "Input should be a valid integer"),
        ({"title": "t", "maybe": 1.0}, "maybe", "Input should be a valid integer"),
        ({"title": "t", "maybe": "5"}, "maybe", "Input should be a valid integer"),
        ({"title": "t", "ratio": "2"}, "ratio", "Input should be a valid number"),
        ({"title": "t", "ratio": True}, "ratio", "Input should be a valid number"),
        ({"title": "t", "ratio": math.inf}, "ratio", "Input should be a finite number"),
        ({"title": "t", "ratio": math.nan}, "ratio", "Input should be a finite number"),
        ({"title": "t", "mode": "Auto"}, "mode", "Input should be 'auto' or 'off'"),
        ({"title": "t", "leaves": {"name": "a"}}, "leaves", "Input should be a valid list"),
        (
            {"title": "t", "leaves": [{"name": "ab\n"}]},
            "leaves[0].name",
            "String should match pattern '^[a-z]+$'",
        ),
        ({"title": "t", "leaves": ["a"]}, "leaves[0]", "Input should be an object"),
        ({"title": "t", "tags": []}, "tags", "Input should be a valid dictionary"),
        ({"title": "t", "tags": {"a": 1}}, "tags.a", "Input should be a valid string"),
        ({"title": "t", "either": 1}, "either", "Input should be true or false or a list"),
        ({"title": "t", "either": [1]}, "either", "Input should be true or false or a list"),
        ({"title": "t", "even": 3}, "even", "expected an even number"),
        ({"title": "t", "even": "2"}, "even", "Input should be a valid integer"),
        (
            {"title": "t", "leaves": [{"name": ""}]},
            "leaves[0].name",
            "String should have at least 1 character, not 0",
        ),
        (
            {"title": "t", "leaves": [{"name": "abcdefghi"}]},
            "leaves[0].name",
            "String should have at most 8 characters, not 9",
        ),
        ({"title": "t", "undo": {"mounts": []}}, "undo.kind", "required key is missing"),
        (
            {"title": "t", "undo": {"kind": "x"}},
            "undo.kind",
            "expected 'kind' to be 'hook' or 'thaw'",
        ),
        ({"title": "t", "undo": {"kind": "hook", "mounts": []}}, "undo.mounts", "unknown key"),
        ({"title": "t", "undo": "hook"}, "undo", "Input should be an object"),
        ({"title": "forbidden"}, "(top level)", "this title is not allowed"),
        ({"title": "t", "note": "x"}, "note", "unknown key"),
        ("not an object", "(top level)", "Input should be an object"),
    ],
)
def test_wrong_values_are_refused_never_converted(data: object, loc: str, msg: str) -> None:
    errors = _errors(Top, data)
    assert [(schema.where(e.loc), e.msg) for e in errors] == [(loc, msg)]


def test_a_null_where_no_null_is_allowed() -> None:
    (e,) = _errors(Top, {"title": None})
    assert (e.loc, e.msg) == (("title",), "Input should be a valid string")
    (e,) = _errors(Top, {"title": "t", "colour": None})
    assert e.loc == ("colour",)


def test_lists_have_limits_too() -> None:
    @dataclass(frozen=True)
    class Few:
        items: Annotated[tuple[str, ...], Rule(max_length=2)] = ()

    assert load(Few, {"items": ["a", "b"]}).items == ("a", "b")
    (e,) = _errors(Few, {"items": ["a", "b", "c"]})
    assert e.msg == "List should have at most 2 items, not 3"


def test_a_check_may_normalise_the_value() -> None:
    @dataclass(frozen=True)
    class Lower:
        code: Annotated[str, Rule(check=str.lower)] = ""

    assert load(Lower, {"code": "0xAB"}).code == "0xab"


def test_json_documents() -> None:
    assert load_json(Leaf, b'{"name": "a"}') == Leaf("a")
    with pytest.raises(Invalid) as e:
        load_json(Leaf, b'{"name": ')
    (err,) = e.value.errors
    assert err.kind == "json" and err.msg.startswith("Invalid JSON: ")
    with pytest.raises(Invalid):
        load_json(Leaf, b"\xff\xfe")
    # Non-ASCII text stays text; the line is compact.
    assert dump_json(Leaf("a")) == b'{"name":"a","count":0}'
    assert json.loads(dump_json({"x": "é"})) == {"x": "é"}


def test_an_instance_is_taken_as_it_is() -> None:
    leaf = Leaf("a")
    assert load(Top, {"title": "t", "leaves": [leaf]}).leaves[0] is leaf
    assert load(Top, {"title": "t", "undo": Hook(argv=("x",))}).undo == Hook(argv=("x",))


def test_the_invalid_error_says_where_and_what() -> None:
    with pytest.raises(Invalid, match=r"ratio: Input should be greater than 0"):
        load(Top, {"title": "t", "ratio": -1})


def test_a_type_it_does_not_know_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Odd:
        value: set[str]

    with pytest.raises(TypeError, match="cannot validate"):
        load(Odd, {"value": []})


def test_a_tagged_union_needs_a_default_tag() -> None:
    @dataclass(frozen=True)
    class NoTag:
        kind: str

    with pytest.raises(TypeError, match="no default for its tag"):
        schema.validator(Annotated[Hook | NoTag, Tagged("kind")])


def test_describe() -> None:
    assert schema.describe(Annotated[int, Rule(ge=0)] | None) == "an integer or null"
    assert schema.describe(Literal["a"]) == "'a'"
    assert schema.describe(dict[str, int]) == "a table"
