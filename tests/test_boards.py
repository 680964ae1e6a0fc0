"""Board configs: every shipped YAML loads, is schema-checked, and carries the data-sheet figures."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from opq_hw.boards import RESOURCES, Board, config_dir, list_boards, load_board
from opq_hw.errors import OpqError

EXPECTED = {  # name: (part prefix, LUT, FF, BRAM18, URAM, DSP) from the data-sheet figures
    "pynq-z2": ("xc7z020", 53200, 106400, 280, 0, 220),
    "ultra96-v2": ("xczu3eg", 70560, 141120, 432, 0, 360),
    "zcu104": ("xczu7ev", 230400, 460800, 624, 96, 1728),
    "kv260": ("xck26", 117120, 234240, 288, 64, 1248),
    "zcu102": ("xczu9eg", 274080, 548160, 1824, 0, 2520),
    "arty-a7-100t": ("xc7a100t", 63400, 126800, 270, 0, 240),
    "alveo-u250": ("xcu250", 1728000, 3456000, 5376, 1280, 12288),
    "ecp5-85f": ("LFE5U-85F", 84000, 84000, 208, 0, 156),
    "ice40-up5k": ("iCE40UP5K", 5280, 5280, 30, 0, 8),
}


def test_every_board_loads_and_matches_the_data_sheet():
    assert set(list_boards()) == set(EXPECTED)
    for name, (part, *cap) in EXPECTED.items():
        b = load_board(name)
        assert b.name == name
        assert b.part.startswith(part)
        assert [b.capacity[r] for r in ("LUT", "FF", "BRAM18", "URAM", "DSP")] == cap
        assert b.provenance["capacity"] and b.provenance["coefficients"]
        assert all(0 < b.utilisation_limits[r] <= 1 for r in RESOURCES)
        assert b.limit("LUT") == pytest.approx(b.utilisation_limits["LUT"] * b.capacity["LUT"] - b.shell["LUT"])


def test_lattice_block_sizes_and_flows():
    assert load_board("ice40-up5k").bram_block_bits == 4096
    assert load_board("ecp5-85f").bram_block_bits == 18432
    assert load_board("ecp5-85f").lut_inputs == 4
    for n in ("ecp5-85f", "ice40-up5k"):
        assert load_board(n).flows == ("rtl",)
    assert "finn" in load_board("pynq-z2").flows


def test_round_trip_through_dict_and_json():
    import json

    for n in list_boards():
        b = load_board(n)
        assert Board.from_dict(json.loads(json.dumps(b.to_dict()))) == b


def _raw(name="pynq-z2"):
    return yaml.safe_load((config_dir() / f"{name}.yaml").read_text())


def test_unknown_and_missing_keys_are_rejected(tmp_path):
    d = _raw()
    d["lut_count"] = 5
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(OpqError, match="unknown keys.*lut_count"):
        load_board(str(p))
    d = _raw()
    del d["clock_mhz"]
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(OpqError, match="missing keys.*clock_mhz"):
        load_board(str(p))
    d = _raw()
    d["coefficients"]["magic"] = 1.0
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(OpqError, match="unknown coefficients.*magic"):
        load_board(str(p))


@pytest.mark.parametrize("key,value,match", [
    ("capacity", {"LUT": 1, "FF": 1, "BRAM18": 1, "URAM": 0}, "must map exactly"),
    ("capacity", {"LUT": -1, "FF": 1, "BRAM18": 1, "URAM": 0, "DSP": 0}, "non-negative"),
    ("utilisation_limits", {"LUT": 1.5, "FF": 0.8, "BRAM18": 0.9, "URAM": 0.9, "DSP": 0.9}, r"in \(0, 1\]"),
    ("family", "stratix", "family"),
    ("flows", ["vivado"], "flows"),
    ("clock_mhz", 0, "clock_mhz"),
    ("lut_inputs", 5, "lut_inputs"),
])
def test_bad_values_are_rejected(tmp_path, key, value, match):
    d = _raw()
    d[key] = value
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(OpqError, match=match):
        load_board(str(p))


def test_unknown_board_names_the_choices():
    with pytest.raises(OpqError, match="unknown board 'nope'.*pynq-z2"):
        load_board("nope")


def test_board_passes_through_and_is_frozen():
    b = load_board("pynq-z2")
    assert load_board(b) is b
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.clock_mhz = 1.0  # type: ignore[misc]


def test_cli_boards(capsys):
    from opq_hw.cli import main

    assert main(["boards"]) == 0
    out = capsys.readouterr().out.split()
    assert "pynq-z2" in out and "ice40-up5k" in out
    assert main(["boards", "kv260"]) == 0
    assert "xck26" in capsys.readouterr().out
