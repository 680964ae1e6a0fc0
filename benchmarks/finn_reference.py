"""FINN's own MVAU estimates for a list of configurations (run with the FINN environment's python).

stdin: JSON list of {MW, MH, PE, SIMD, idt, wdt, vecs, mem_mode?, ram_style?, res_type?, acc?};
stdout: JSON list of {LUT, BRAM18, URAM, DSP, cycles} from FINN's MVAU_hls
(lut_estimation, bram_estimation, uram_estimation, dsp_estimation, get_exp_cycles).
Used by benchmarks/estimate_vs_synth.py and tests/test_cost.py to check opq_hw.cost.finn_mvau.
"""
import inspect
import json
import sys

from onnx import helper
from qonnx.custom_op.registry import getCustomOp

PART = "xc7z020clg400-1"


def _call(fn):
    return fn(PART) if len(inspect.signature(fn).parameters) >= 1 else fn()


def main():
    out = []
    for c in json.load(sys.stdin):
        node = helper.make_node(
            "MVAU_hls", ["inp", "w"], ["out"], domain="finn.custom_op.fpgadataflow.hls", backend="fpgadataflow",
            MW=c["MW"], MH=c["MH"], PE=c["PE"], SIMD=c["SIMD"], inputDataType=c["idt"], weightDataType=c["wdt"],
            outputDataType=c.get("acc", "INT32"), noActivation=1, numInputVectors=c["vecs"],
            mem_mode=c.get("mem_mode", "internal_decoupled"), ram_style=c.get("ram_style", "auto"),
            resType=c.get("res_type", "auto"), accDataType=c.get("acc", "INT32"))
        op = getCustomOp(node)
        out.append({"LUT": int(_call(op.lut_estimation)), "BRAM18": int(_call(op.bram_estimation)),
                    "URAM": int(_call(op.uram_estimation)), "DSP": int(_call(op.dsp_estimation)),
                    "cycles": int(op.get_exp_cycles())})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
