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
    "icebreaker": ("iCE40UP5K-SG48", 5280, 5280, 30, 0, 8),  # dev boards: their part's figures
    "ulx3s-85f": ("LFE5U-85F-6BG381C", 84000, 84000, 208, 0, 156),
    "ecp5-evn": ("LFE5UM5G-85F", 84000, 84000, 208, 0, 156),
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


# ------------------------------------------------------------------------------------------------
# dev boards: pins with their sources, pin files
# ------------------------------------------------------------------------------------------------
def test_dev_boards_inherit_their_part_and_cite_every_pin():
    ib, ul = load_board("icebreaker"), load_board("ulx3s-85f")
    assert ib.based_on == "ice40-up5k" and ul.based_on == "ecp5-85f"
    assert ib.coefficients == load_board("ice40-up5k").coefficients
    assert ul.clock_mhz == 25.0 and load_board("ecp5-85f").clock_mhz == 50.0  # the part file is unchanged
    assert ib.pin("clock") == ("clk", ib.pins["clk"]) and ib.pins["clk"]["mhz"] == 12.0
    # the facts, from the board makers' constraint files
    assert {n: p["site"] for n, p in ib.pins.items()} == {"clk": "35", "rx": "6", "tx": "9", "btn_n": "10",
                                                         "ledr_n": "11", "ledg_n": "37"}
    assert [ul.pin(r)[1]["site"] for r in ("clock", "uart_rx", "uart_tx", "reset")] == ["G2", "M1", "L4", "D6"]
    assert [p["site"] for _, p in ul.pins_with_role("led")] == ["B2", "C2", "C1", "D2", "D1", "E2", "E1", "H3"]
    for b in (ib, ul):
        assert all("constraint" in p["source"] or ".pcf" in p["source"] for p in b.pins.values())
        assert b.provenance["pins"] and b.provenance["capacity"] == load_board(b.based_on).provenance["capacity"]
    ev = load_board("ecp5-evn")  # the third dev board: pins from Project Trellis' examples, said so per pin
    assert ev.based_on == "ecp5-85f" and ev.pin("clock")[1]["site"] == "A10" and ev.pin("clock")[1]["mhz"] == 12.0
    assert [ev.pin(r)[1]["site"] for r in ("uart_rx", "uart_tx")] == ["P2", "P3"] and not ev.pins_with_role("reset")
    assert [p["site"] for _, p in ev.pins_with_role("led")] == ["A13", "A12", "B19", "A18", "B18", "C17", "A17", "B17"]
    assert all("prjtrellis" in p["source"] and "not" in p["source"] for p in ev.pins.values())
    assert [b.openfpgaloader_board for b in (ib, ul, ev)] == ["ice40_generic", "ulx3s", "ecp5_evn"]
    assert all(b.provenance["openfpgaloader_board"] for b in (ib, ul, ev))
    assert not load_board("ecp5-85f").pins
    with pytest.raises(OpqError, match="bare part.*icebreaker"):
        load_board("ecp5-85f").pin("clock")


def test_pin_files_are_generated_from_the_yaml():
    from opq_hw.boards import pin_file

    name, pcf = pin_file("icebreaker")
    assert name == "icebreaker.pcf"
    body = [ln.split("#")[0].split() for ln in pcf.splitlines() if ln.split("#")[0].strip()]
    assert body == [["set_io", "-nowarn", n, s] for n, s in
                    (("clk", "35"), ("rx", "6"), ("tx", "9"), ("btn_n", "10"), ("ledr_n", "11"), ("ledg_n", "37"))] \
        + [["set_frequency", "clk", "12"]]
    name, lpf = pin_file("ulx3s-85f")
    assert name == "ulx3s-85f.lpf"
    code = [ln.split("#")[0].strip() for ln in lpf.splitlines() if ln.split("#")[0].strip()]
    assert 'LOCATE COMP "clk_25mhz" SITE "G2" ;' in code and 'LOCATE COMP "ftdi_txd" SITE "M1" ;' in code
    assert 'IOBUF PORT "ftdi_rxd" PULLMODE=UP IO_TYPE=LVCMOS33 ;' in code
    assert code[-1] == 'FREQUENCY PORT "clk_25mhz" 25 MHZ ;'
    assert sum(c.startswith("LOCATE") for c in code) == len(load_board("ulx3s-85f").pins) == 12
    with pytest.raises(OpqError, match="bare part"):
        pin_file("ice40-up5k")


def _dev(tmp_path, edit, name="icebreaker"):
    d = yaml.safe_load((config_dir() / f"{name}.yaml").read_text())
    edit(d)
    p = tmp_path / "dev.yaml"
    p.write_text(yaml.safe_dump(d))
    return str(p)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["pins"]["clk"].update(colour="red"), "unknown keys.*colour"),
    (lambda d: d["pins"]["rx"].pop("source"), "missing.*source"),
    (lambda d: d["pins"]["rx"].update(source="x"), "source.*where the pin comes from"),
    (lambda d: d["pins"]["rx"].update(role="uart"), "role.*choose one of"),
    (lambda d: d["pins"]["tx"].update(site=6), "both use site 6"),
    (lambda d: d["pins"]["tx"].update(site="G2x"), "not a ice40 package pin"),
    (lambda d: d["pins"]["clk"].pop("mhz"), "mhz.*oscillator"),
    (lambda d: d["pins"]["rx"].update(mhz=3), "only for the clock"),
    (lambda d: d["pins"].pop("tx"), "exactly one uart_tx"),
    (lambda d: d["pins"]["ledr_n"].update(role="reset"), "at most one reset"),
    (lambda d: d["pins"]["btn_n"].update(active="sometimes"), "high or low"),
    (lambda d: d["pins"].update({"Bad-Name": {"role": "led", "site": 2, "source": "a schematic page"}}), "port name"),
    (lambda d: d.update(based_on="nope"), "not a shipped part-level board"),
    (lambda d: d.update(based_on="icebreaker"), "must name a part-level board"),
    (lambda d: d.update(pins=[1, 2]), "must map port names"),
])
def test_bad_pins_are_rejected(tmp_path, edit, match):
    with pytest.raises(OpqError, match=match):
        load_board(_dev(tmp_path, edit))


def test_ecp5_pins_need_an_io_standard(tmp_path):
    with pytest.raises(OpqError, match="io_type.*required on ECP5"):
        load_board(_dev(tmp_path, lambda d: d["pins"]["led0"].pop("io_type"), "ulx3s-85f"))
    with pytest.raises(OpqError, match="pull` must be up, down or none"):
        load_board(_dev(tmp_path, lambda d: d["pins"]["led0"].update(pull="sideways"), "ulx3s-85f"))
