"""Rewrite the golden cost.json files from demo_specs.json + demo_allocation.json."""
import json
from pathlib import Path

from opq_hw.artifact import write_json
from opq_hw.cost import choose_folding, estimate
from opq_hw.spec import Allocation, LayerSpec

HERE = Path(__file__).parent
CASES = [("pynq-z2", "hls4ml-latency"), ("zcu104", "finn-mvau")]

if __name__ == "__main__":
    specs = [LayerSpec.from_dict(d) for d in json.loads((HERE / "demo_specs.json").read_text())]
    alloc = Allocation.from_dict(json.loads((HERE / "demo_allocation.json").read_text()))
    for board, arch in CASES:
        fold = choose_folding(specs, alloc, board, arch)
        write_json(HERE / f"cost_{board}_{arch}.json", estimate(specs, alloc, board, arch, folding=fold).to_dict())
        print(board, arch, fold)
