// opq_uart_link: UART receiver -> frame decoder -> (the core's byte streams) -> frame encoder ->
// UART transmitter. The core takes the IN_LEN payload bytes of each checked INFER frame
// (c_in_*) and returns OUT_LEN result bytes (c_out_*, OUT_BEAT bytes per beat); the link counts
// its compute cycles and answers every frame (result, error or pong) over `tx`. The core is fed
// only while the encoder is idle, so its results are always taken (c_out_ready stays high from
// the first input byte to the last result beat): a core may ignore c_out_ready.
// See opq_frame_rx / opq_frame_tx.
module opq_uart_link #(
    parameter CLKS_PER_BIT = 104,
    parameter IN_LEN = 64,
    parameter OUT_LEN = 10,
    parameter OUT_BEAT = 1,
    parameter TIMEOUT_CLKS = 40 * CLKS_PER_BIT  // four byte times of silence cut a frame short
) (
    input clk,
    input rst,
    input rx,
    output tx,
    output c_in_valid,
    output [7:0] c_in_data,
    output c_in_last,
    input c_in_ready,
    input c_out_valid,
    input [8*OUT_BEAT-1:0] c_out_data,
    output c_out_ready
);
    wire b_valid, b_ferr, ping, err, tx_valid, tx_ready, enc_idle, d_valid, d_ready;
    wire [7:0] b_data, err_code, err_detail, tx_data;
    reg first = 1'b1;  // the next c_in byte is the first of a frame
    always @(posedge clk)
        if (rst) first <= 1'b1;
        else if (c_in_valid && c_in_ready) first <= c_in_last;

    opq_uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_rx (.clk(clk), .rst(rst), .rx(rx), .valid(b_valid),
        .data(b_data), .frame_err(b_ferr));
    opq_frame_rx #(.IN_LEN(IN_LEN), .TIMEOUT_CLKS(TIMEOUT_CLKS)) u_dec (.clk(clk), .rst(rst),
        .in_valid(b_valid), .in_data(b_data), .in_frame_err(b_ferr), .m_valid(d_valid), .m_data(c_in_data),
        .m_last(c_in_last), .m_ready(d_ready), .ping(ping), .err(err), .err_code(err_code),
        .err_detail(err_detail));
    assign c_in_valid = d_valid && enc_idle;
    assign d_ready = c_in_ready && enc_idle;
    opq_frame_tx #(.IN_LEN(IN_LEN), .OUT_LEN(OUT_LEN), .BEAT(OUT_BEAT)) u_enc (.clk(clk), .rst(rst),
        .s_valid(c_out_valid), .s_data(c_out_data), .s_ready(c_out_ready), .idle(enc_idle), .start(first && c_in_valid && c_in_ready), .err(err),
        .err_code(err_code), .err_detail(err_detail), .ping(ping), .tx_valid(tx_valid), .tx_data(tx_data),
        .tx_ready(tx_ready));
    opq_uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_tx (.clk(clk), .rst(rst), .valid(tx_valid), .data(tx_data),
        .ready(tx_ready), .tx(tx));
endmodule
