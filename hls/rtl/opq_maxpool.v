// opq_maxpool: KR x KC max pooling with stride (KR, KC) (PyTorch floor mode) on a pixel stream
// (KR = 1 for 1-D pooling).
// Input/output: one pixel per valid cycle, C channels of BW bits, channel c at [c*BW +: BW],
// frames of H x W pixels in raster order. SIGNED selects signed comparison.
// One row of partial maxima (W/KC pixels) is kept; an output leaves one cycle after the
// bottom-right pixel of its block arrives. Rows/columns past OH*KR / OW*KC are dropped.
module opq_maxpool #(
    parameter C = 1, parameter BW = 8,
    parameter H = 8, parameter W = 8,
    parameter KR = 2, parameter KC = 2, parameter SIGNED = 0
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
    localparam CW = 16;

    reg [PIX-1:0] part [0:OW-1];
    reg [CW-1:0] r, c, kr, kc, oc;

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
    wire [PIX-1:0] cur = (oc < OW) ? part[oc] : {PIX{1'b0}};
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
