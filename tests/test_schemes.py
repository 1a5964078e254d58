"""Label schemes are data: the paper's default, files, and schemes made from folder names."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdsdys.errors import SchemeError
from mdsdys.schemes import (
    default_scheme,
    load_scheme_file,
    parse_scheme_bytes,
    scheme_from_folders,
    scheme_to_mapping,
)
from mdsdys.store.slides import load_scheme, save_scheme


def _mapping(**changes):
    data = scheme_to_mapping(default_scheme()) | {"name": "custom"}
    data.update(changes)
    return data


def test_default_scheme_is_the_papers_eight_classes_with_hotkeys_1_to_8():
    scheme = default_scheme()
    assert scheme.codes == ("EN", "ED", "GN", "GD", "MN", "MD", "BL", "OT")
    assert [c.hotkey for c in scheme.classes] == list("12345678")
    assert scheme.get("ED").dysplastic is True and scheme.get("EN").dysplastic is False
    assert scheme.get("BL").dysplastic is None
    assert "nuclear budding" in scheme.features_for("ED")
    assert scheme.features_for("BL") == ()


def test_a_scheme_round_trips_through_the_store(db):
    save_scheme(db, default_scheme())
    assert load_scheme(db, "mds8") == default_scheme()


def test_duplicate_hotkeys_are_refused():
    data = _mapping()
    data["classes"][1]["hotkey"] = "1"
    with pytest.raises(SchemeError, match="hotkey '1' twice"):
        parse_scheme_bytes(json.dumps(data).encode(), "dup.json")


def test_a_class_without_lineage_is_refused():
    data = _mapping()
    del data["classes"][2]["lineage"]
    with pytest.raises(SchemeError, match="missing: lineage"):
        parse_scheme_bytes(json.dumps(data).encode(), "nolineage.json")


def test_a_hotkey_that_collides_with_an_action_key_is_refused():
    data = _mapping()
    data["classes"][0]["hotkey"] = "a"
    with pytest.raises(SchemeError, match="action keys"):
        parse_scheme_bytes(json.dumps(data).encode(), "actionkey.json")


def test_scheme_loads_from_toml(tmp_path):
    path = tmp_path / "three.toml"
    path.write_text(
        'name = "three"\n'
        '[[classes]]\ncode = "N"\nlineage = "granulocytic"\nhotkey = "1"\ndysplastic = false\n'
        '[[classes]]\ncode = "D"\nlineage = "granulocytic"\nhotkey = "2"\ndysplastic = true\n'
        '[[classes]]\ncode = "B"\nlineage = "blast"\nhotkey = "3"\n'
        '[lineage_features]\ngranulocytic = ["hypogranulation"]\n'
    )
    scheme = load_scheme_file(path)
    assert scheme.codes == ("N", "D", "B") and scheme.features_for("D") == ("hypogranulation",)


def test_unreadable_scheme_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(SchemeError, match="broken.json"):
        load_scheme_file(path)


def test_scheme_from_folder_names_guesses_lineages():
    scheme = scheme_from_folders("pbc", ["neutrophil", "erythroblast", "platelet", "lymphocyte", "ig"])
    lineage = {c.code: c.lineage for c in scheme.classes}
    assert lineage == {"erythroblast": "erythroid", "ig": "granulocytic", "lymphocyte": "other",
                       "neutrophil": "granulocytic", "platelet": "megakaryocytic"}
    assert len({c.hotkey for c in scheme.classes}) == 5


def test_saving_a_scheme_name_twice_is_refused(db):
    save_scheme(db, default_scheme())
    with pytest.raises(SchemeError, match="already exists"):
        save_scheme(db, default_scheme())


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(["name", "classes", "lineage_features", "description", "x"]), _json_values))
def test_scheme_parser_fuzz_only_raises_scheme_errors(data):
    """Any JSON a user could upload either parses into a valid scheme or raises SchemeError."""
    try:
        scheme = parse_scheme_bytes(json.dumps(data).encode(), "fuzz.json")
    except SchemeError:
        return
    assert len({c.hotkey for c in scheme.classes}) == len(scheme.classes)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=300))
def test_scheme_parser_fuzz_on_raw_bytes(data):
    for name in ("s.json", "s.toml"):
        try:
            parse_scheme_bytes(data, name)
        except SchemeError:
            pass
