// opq_serialize: sends a vector of N values (AW bits each, value i at [i*AW +: AW]) one value
// per cycle: m_valid, m_data, m_last on the last value. A new vector may arrive at the earliest
// N cycles after the previous one (the flow checks this at build time).
module opq_serialize #(
    parameter AW = 16, parameter N = 10
) (
    input clk,
    input rst,
    input in_valid,
    input [N*AW-1:0] in_data,
    output m_valid,
    output [AW-1:0] m_data,
    output m_last
);
    reg [N*AW-1:0] buf_q;
    reg [15:0] left;
    always @(posedge clk) begin
        if (rst) begin
            left <= 0;
        end else if (in_valid) begin
            buf_q <= in_data;
            left <= N;
        end else if (left != 0) begin
            buf_q <= buf_q >> AW;
            left <= left - 1;
        end
    end
    assign m_valid = (left != 0);
    assign m_data = buf_q[AW-1:0];
    assign m_last = (left == 1);
endmodule
