// opq_collect: gathers the N pixels of a frame (PIX bits each) into one vector for a dense layer.
// Pixel p of the frame lands at [p*PIX +: PIX]; out_valid pulses for one cycle after the last
// pixel, while out_data holds the whole frame (it is overwritten as the next frame streams in,
// so the consumer registers it on that cycle).
// DS > 1 (a digit-serial consumer): each pixel's channels come as DS digits of DB bits
// (opq_digit_chain's layout, PIX = C*DS*DB) and out_data holds the current DB-bit digit of every
// pixel and channel, pixel p at [p*C*DB +: C*DB]: digit k on the k-th cycle after out_valid (k < DS).
// SIZED = 1: the pixel counter only as wide as 0..N-1; 0: 16 bits (the whole-activation designs).
module opq_collect #(
    parameter PIX = 8, parameter N = 64,
    parameter DS = 1, parameter DB = 1,
    parameter SIZED = 0
) (
    input clk,
    input rst,
    input in_valid,
    input [PIX-1:0] in_data,
    output reg out_valid,
    output [N*PIX/DS-1:0] out_data
);
    localparam NW = SIZED ? ((N > 2) ? $clog2(N) : 1) : 16;
    reg [NW-1:0] cnt;
    always @(posedge clk) begin
        if (rst) begin
            cnt <= 0;
            out_valid <= 1'b0;
        end else begin
            out_valid <= in_valid && (cnt == N - 1);
            if (in_valid) cnt <= (cnt == N - 1) ? 0 : cnt + 1;
        end
    end
    generate
        if (DS > 1) begin : g_ds
            localparam CD = PIX / DS;
            wire [((N-1)*DS+1)*CD-1:0] st;
            opq_digit_chain #(.C(CD / DB), .DB(DB), .DS(DS), .DEPTH(N)) u_chain (.clk(clk), .rst(rst),
                .push(in_valid), .pix(in_data), .stages(st));
            genvar p;
            for (p = 0; p < N; p = p + 1) begin : g_pix  // pixel p entered N-1-p pushes before the last
                assign out_data[p*CD +: CD] = st[(N-1-p)*DS*CD +: CD];
            end
        end else begin : g_whole
            reg [N*PIX-1:0] buf_q;
            always @(posedge clk)
                if (!rst && in_valid) begin
                    if (N == 1) buf_q <= in_data;
                    else buf_q <= {in_data, buf_q[N*PIX-1:PIX]};
                end
            assign out_data = buf_q;
        end
    endgenerate
endmodule
