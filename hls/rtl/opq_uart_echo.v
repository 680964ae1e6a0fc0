// opq_uart_echo: the serial link around an echo core (the result of an INFER frame is its input,
// so OUT_LEN = IN_LEN): the protocol's loopback test top (tests/test_uart.py drives it through
// sim/tb_uart.cpp with the host codec opq_hw.hil).
module opq_uart_echo #(
    parameter CLKS_PER_BIT = 8,
    parameter IN_LEN = 16
) (
    input clk,
    input rst,
    input rx,
    output tx
);
    wire v, r;
    wire [7:0] d;
    wire last;
    opq_uart_link #(.CLKS_PER_BIT(CLKS_PER_BIT), .IN_LEN(IN_LEN), .OUT_LEN(IN_LEN)) u_link (.clk(clk), .rst(rst),
        .rx(rx), .tx(tx), .c_in_valid(v), .c_in_data(d), .c_in_last(last), .c_in_ready(r), .c_out_valid(v),
        .c_out_data(d), .c_out_ready(r));
endmodule
