// opq_maxpool: KR x KC max pooling with stride (KR, KC) (PyTorch floor mode) on a pixel stream
// (KR = 1 for 1-D pooling).
// Input/output: one pixel per valid cycle, C channels of BW bits, channel c at [c*BW +: BW],
// frames of H x W pixels in raster order. SIGNED selects signed comparison.
// One row of partial maxima (W/KC pixels) is kept; an output leaves one cycle after the
// bottom-right pixel of its block arrives. Rows/columns past OH*KR / OW*KC are dropped.
// SIZED = 1: the counters only as wide as their ranges, and the partial maximum read without
// zeroing it outside the blocks; 0: 16-bit counters (the whole-activation designs).
module opq_maxpool #(
    parameter C = 1, parameter BW = 8,
    parameter H = 8, parameter W = 8,
    parameter KR = 2, parameter KC = 2, parameter SIGNED = 0,
    parameter SIZED = 0
) (
    input clk,
    input rst,
    input in_valid,
    input [C*BW-1:0] in_data,
    output reg out_valid,
    output reg [C*BW-1:0] out_data
);
    localparam PIX = C * BW;
    localparam OH = H / KR;
    localparam OW = W / KC;
    localparam RW = SIZED ? ((H > 2) ? $clog2(H) : 1) : 16;             // r: 0..H-1
    localparam QW = SIZED ? ((W > 2) ? $clog2(W) : 1) : 16;             // c: 0..W-1
    localparam KRW = SIZED ? ((KR > 2) ? $clog2(KR) : 1) : 16;          // kr: 0..KR-1
    localparam KCW = SIZED ? ((KC > 2) ? $clog2(KC) : 1) : 16;          // kc: 0..KC-1
    localparam OCW = SIZED ? ((OW + 1 > 2) ? $clog2(OW + 1) : 1) : 16;  // oc: 0..OW

    reg [PIX-1:0] part [0:OW-1];
    reg [RW-1:0] r;
    reg [QW-1:0] c;
    reg [KRW-1:0] kr;
    reg [KCW-1:0] kc;
    reg [OCW-1:0] oc;

    function [PIX-1:0] vmax(input [PIX-1:0] a, input [PIX-1:0] b);
        integer i;
        reg [BW-1:0] x, y;
        begin
            for (i = 0; i < C; i = i + 1) begin
                x = a[i*BW +: BW];
                y = b[i*BW +: BW];
                if (SIGNED != 0)
                    vmax[i*BW +: BW] = ($signed(x) >= $signed(y)) ? x : y;
                else
                    vmax[i*BW +: BW] = (x >= y) ? x : y;
            end
        end
    endfunction

    wire in_block = (oc < OW) && (r < OH * KR);
    // SIZED: a partial maximum read outside the blocks (oc = OW, W not a multiple of KC) is never
    // written back nor sent (out_valid needs in_block), so it is not zeroed
    wire [PIX-1:0] cur = (SIZED != 0 || oc < OW) ? part[oc] : {PIX{1'b0}};
    wire first = (kr == 0) && (kc == 0);
    wire [PIX-1:0] nxt = first ? in_data : vmax(cur, in_data);

    always @(posedge clk) begin
        if (rst) begin
            r <= 0; c <= 0; kr <= 0; kc <= 0; oc <= 0;
            out_valid <= 1'b0;
        end else begin
            out_valid <= in_valid && in_block && (kr == KR - 1) && (kc == KC - 1);
            if (in_valid) begin
                if (in_block) part[oc] <= nxt;
                out_data <= nxt;
                if (c == W - 1) begin
                    c <= 0; kc <= 0; oc <= 0;
                    if (r == H - 1) begin
                        r <= 0; kr <= 0;
                    end else begin
                        r <= r + 1;
                        kr <= (kr == KR - 1) ? 0 : kr + 1;
                    end
                end else begin
                    c <= c + 1;
                    if (kc == KC - 1) begin
                        kc <= 0; oc <= oc + 1;
                    end else begin
                        kc <= kc + 1;
                    end
                end
            end
        end
    end
endmodule
