// opq_serialize: sends a vector of N values (AW bits each, value i at [i*AW +: AW]) one value
// per cycle: m_valid, m_data, m_last on the last value. A new vector may arrive at the earliest
// N cycles after the previous one (the flow checks this at build time).
// SIZED = 1: the count of values left only as wide as 0..N; 0: 16 bits.
// HOLD = 1: in_data holds the vector from the cycle after in_valid until the last value has been
// sent (a digit-serial layer's output register, loaded with out_valid, next loaded a frame later),
// so value i is read off it by a one-hot multiplexer instead of a copy shifted out.
module opq_serialize #(
    parameter AW = 16, parameter N = 10,
    parameter SIZED = 0, parameter HOLD = 0
) (
    input clk,
    input rst,
    input in_valid,
    input [N*AW-1:0] in_data,
    output m_valid,
    output [AW-1:0] m_data,
    output m_last
);
    localparam LW = SIZED ? ((N + 1 > 2) ? $clog2(N + 1) : 1) : 16;
    reg [LW-1:0] left;
    always @(posedge clk) begin
        if (rst) left <= 0;
        else if (in_valid) left <= N;
        else if (left != 0) left <= left - 1;
    end
    generate
        if (HOLD) begin : g_hold
            reg [N-1:0] sel;  // one-hot: the value on m_data
            always @(posedge clk) begin
                if (in_valid) sel <= 1;
                else sel <= sel << 1;
            end
            integer j;
            reg [AW-1:0] pick;
            always @(*) begin
                pick = 0;
                for (j = 0; j < N; j = j + 1) pick = pick | (in_data[j*AW +: AW] & {AW{sel[j]}});
            end
            assign m_data = pick;
        end else begin : g_copy
            reg [N*AW-1:0] buf_q;
            always @(posedge clk) begin
                if (rst) begin
                end else if (in_valid) buf_q <= in_data;
                else if (left != 0) buf_q <= buf_q >> AW;
            end
            assign m_data = buf_q[AW-1:0];
        end
    endgenerate
    assign m_valid = (left != 0);
    assign m_last = (left == 1);
endmodule
