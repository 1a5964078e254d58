"""Hostile scheme files end in a SchemeError, and every scheme that loads is safe to draw and store
(issue 15, item 20)."""

import json
import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdsdys.errors import SchemeError
from mdsdys.schemes import MAX_SCHEME_BYTES, default_scheme, parse_scheme_bytes, scheme_to_mapping

HEX = re.compile(r"^#[0-9A-Fa-f]{6}$")


def _file(**changes) -> bytes:
    data = scheme_to_mapping(default_scheme()) | {"name": "custom"}
    data.update(changes)
    return json.dumps(data).encode()


def _with_class(index: int, **changes) -> bytes:
    classes = scheme_to_mapping(default_scheme())["classes"]
    classes[index] = classes[index] | changes
    return _file(classes=classes)


@pytest.mark.parametrize("color", ["red", "#12345", "#gggggg", "javascript:alert(1)", "#d62728;x", ""])
def test_a_colour_that_is_not_hex_is_refused(color):
    with pytest.raises(SchemeError, match="not a hex colour"):
        parse_scheme_bytes(_with_class(0, color=color), "s.json")


def test_codes_that_differ_only_by_case_are_refused():
    with pytest.raises(SchemeError, match="'EN' and 'en' twice"):
        parse_scheme_bytes(_with_class(1, code="en"), "s.json")


def test_hotkeys_that_differ_only_by_case_are_refused():
    classes = scheme_to_mapping(default_scheme())["classes"]
    classes[0]["hotkey"], classes[1]["hotkey"] = "q", "Q"
    with pytest.raises(SchemeError, match="hotkey"):
        parse_scheme_bytes(_file(classes=classes), "s.json")


@pytest.mark.parametrize("code", ["E\x1fD", "ED\n", "\x00", "E/D", "..\\x", "   ", "E\u200bD"])
def test_codes_with_control_characters_or_separators_are_refused(code):
    with pytest.raises(SchemeError, match="control characters"):
        parse_scheme_bytes(_with_class(1, code=code), "s.json")


@pytest.mark.parametrize("text,name", [
    ("[" * 5000, "s.json"),
    ('{"a":' * 5000, "s.json"),
    ("a = " + "[" * 5000, "s.toml"),
    ("a = " + "{b = " * 5000, "s.toml"),
], ids=["json-list", "json-object", "toml-array", "toml-inline-table"])
def test_deeply_nested_files_are_refused_before_parsing(text, name):
    with pytest.raises(SchemeError, match="nests"):
        parse_scheme_bytes(text.encode(), name)


def test_nesting_hidden_in_a_toml_multiline_string_still_ends_in_a_scheme_error():
    text = 'x = """ " """\ny = """\na = ' + "[" * 5000  # fools the bracket count; the backstop holds
    with pytest.raises(SchemeError):
        parse_scheme_bytes(text.encode(), "s.toml")


def test_an_oversized_scheme_file_is_refused():
    with pytest.raises(SchemeError, match="limit"):
        parse_scheme_bytes(_file(description="x" * MAX_SCHEME_BYTES), "s.json")


def test_the_default_scheme_still_loads_from_json_and_toml():
    assert parse_scheme_bytes(_file(), "s.json").codes == default_scheme().codes
    toml = "name = 'custom'\n" + "".join(
        f"[[classes]]\ncode = '{c.code}'\nlineage = '{c.lineage}'\nhotkey = '{c.hotkey}'\ncolor = '{c.color}'\n"
        for c in default_scheme().classes)
    assert parse_scheme_bytes(toml.encode(), "s.toml").codes == default_scheme().codes


_text = st.text(st.characters(codec="utf-8"), max_size=8)
_json_values = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                            max_leaves=12)
_classes = st.lists(st.fixed_dictionaries(
    {"code": _text, "lineage": _text, "hotkey": st.text(string.printable, min_size=0, max_size=2)},
    optional={"color": _text | st.sampled_from(["#d62728", "#ABCDEF"]), "name": _text,
              "dysplastic": st.none() | st.booleans() | _json_values}), max_size=6)


def _assert_safe(scheme) -> None:
    """What the pages, outlines, report and store rely on for every loaded scheme."""
    codes = [c.code.casefold() for c in scheme.classes]
    assert len(set(codes)) == len(codes)
    for label_class in scheme.classes:
        assert HEX.match(label_class.color)
        assert "\x1f" not in label_class.code and label_class.code.isprintable() and "/" not in label_class.code


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"name": _text, "classes": _classes}, optional={"lineage_features": _json_values}))
def test_any_scheme_mapping_loads_safely_or_raises_scheme_error(data):
    try:
        scheme = parse_scheme_bytes(json.dumps(data).encode(), "s.json")
    except SchemeError:
        return
    _assert_safe(scheme)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode), st.sampled_from(["s.json", "s.toml"]))
def test_any_bytes_load_safely_or_raise_scheme_error(data, name):
    try:
        scheme = parse_scheme_bytes(data, name)
    except SchemeError:
        return
    _assert_safe(scheme)


@settings(max_examples=60, deadline=None)
@given(st.integers(33, 3000), st.sampled_from(["[", "{\"a\":", "a = [", "a = {b = "]), st.booleans())
def test_any_deep_nesting_is_a_scheme_error(depth, opener, toml):
    text = (opener if not opener.startswith("a") or toml else "[") * depth
    if toml and opener.startswith("a"):
        text = opener + opener.removeprefix("a = ") * depth
    with pytest.raises(SchemeError):
        parse_scheme_bytes(text.encode(), "s.toml" if toml else "s.json")
