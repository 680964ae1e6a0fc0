"""Open RTL flow internals (issue 5): integer network, Verilog generation, Verilator, Yosys/nextpnr.

Nothing here imports da4ml, brevitas or the EDA tools at module level; `opq_hw.flows.rtl_flow`
is the entry point."""
