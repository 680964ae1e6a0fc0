// opq_window: sliding-window (line buffer) generator for a streamed stride-1 convolution.
//
// Input: one pixel per valid cycle (all C channels, BW bits each, channel c at [c*BW +: BW]),
// frames of H x W pixels in raster order, back to back or with gaps; the stream never stalls.
// Output: for every output position (raster order over OH x OW) one window of KH x KW pixels,
// tap t = kh*KW + kw at [t*C*BW +: C*BW]; taps outside the image (zero padding PH, PW) read 0.
//
// How: a shift register of the last (KH-1)*W + KW pixels. Output m (full-width raster index
// m = orow*W + ocol, ocol < W) is emitted at the push of input pixel m + D,
// D = (KH-1-PH)*W + (KW-1-PW), i.e. at a constant lag. The last outputs of a frame need up to
// TAIL pushes past the frame end: they are the next frame's first pixels, or zero "flush"
// pushes made on their own in cycles without input before the next frame begins, so a lone
// frame also completes.
// Latency: one cycle from the push that completes a window to out_valid.
// GAP > 1 (digit-serial consumers, which read a window for GAP cycles): a flush push comes at the
// earliest GAP cycles after the previous push, so pushes stay on the input's GAP-cycle grid.
// DS > 1 (digit-serial consumers): in_data holds each channel as DS digits of DB bits (BW = DS*DB,
// opq_digit_chain's layout) and out_data the current DB-bit digit of every tap and channel: digit k
// on the k-th cycle after out_valid (k < DS), read off opq_digit_chain's stages, no multiplexer.
module opq_window #(
    parameter C = 1, parameter BW = 8,
    parameter H = 8, parameter W = 8,
    parameter KH = 3, parameter KW = 3,
    parameter PH = 1, parameter PW = 1,
    parameter GAP = 1,
    parameter DS = 1, parameter DB = BW,
    parameter SIZED = 0
) (
    input clk,
    input rst,
    input in_valid,
    input [C*BW-1:0] in_data,
    output reg out_valid,
    output [KH*KW*C*DB-1:0] out_data
);
    localparam PIX = C * BW;
    localparam OH = H + 2 * PH - KH + 1;
    localparam OW = W + 2 * PW - KW + 1;
    localparam DEPTH = (KH - 1) * W + KW;
    localparam D = (KH - 1 - PH) * W + (KW - 1 - PW);
    localparam LASTM = (OH - 1) * W + (OW - 1);
    localparam TAIL = (LASTM + D > H * W - 1) ? (LASTM + D - (H * W - 1)) : 0;
    // counter widths (SIZED: enough for 0..H*W-1, 0..TAIL, the output rows 0..OH-1, 0..W-1, 0..GAP-1)
    localparam NR = (OH > H) ? OH : H;
    localparam NW = SIZED ? ((H * W > 2) ? $clog2(H * W) : 1) : 16;
    localparam TW = SIZED ? ((TAIL + 1 > 2) ? $clog2(TAIL + 1) : 1) : 16;
    localparam RW = SIZED ? ((NR > 2) ? $clog2(NR) : 1) : 16;
    localparam QW = SIZED ? ((W > 2) ? $clog2(W) : 1) : 16;
    localparam GW = SIZED ? ((GAP > 2) ? $clog2(GAP) : 1) : 16;

    reg [PIX*DEPTH-1:0] sr;
    reg [NW-1:0] n;      // index of the next input pixel in its frame
    reg [TW-1:0] tail;   // pushes still owed to the previous frame's last outputs
    reg [RW-1:0] orow, prow;  // row of the next output (full-width raster), of the window on out_data
    reg [QW-1:0] ocol, pcol;  // their columns
    wire last_out = SIZED ? (orow == OH - 1 && ocol == OW - 1) : (orow * W + ocol == LASTM);

    wire tail_on = (tail != 0);
    // a flush push only before the next frame has begun: once its first pixel is in, its pixels
    // must stay contiguous in the shift register, and they complete the tail themselves
    wire flush_ok;
    wire push = in_valid | (tail_on & (n == 0) & flush_ok);
    generate
        if (GAP > 1) begin : g_gap
            reg [GW-1:0] since;  // cycles since the last push, up to GAP - 1
            always @(posedge clk) begin
                if (rst || push) since <= 0;
                else if (since != GAP - 1) since <= since + 1;
            end
            assign flush_ok = (since == GAP - 1);
        end else begin : g_nogap
            assign flush_ok = 1'b1;
        end
    endgenerate
    wire emit = push & (tail_on | (n >= D));
    wire [PIX-1:0] pix = in_valid ? in_data : {PIX{1'b0}};

    always @(posedge clk) begin
        if (rst) begin
            n <= 0; tail <= 0; orow <= 0; ocol <= 0; prow <= 0; pcol <= 0;
            out_valid <= 1'b0;
        end else begin
            out_valid <= emit & (ocol < OW);
            if (push) begin
                sr <= {sr[PIX*DEPTH-1-PIX:0], pix};
            end
            if (in_valid) begin
                n <= (n == H * W - 1) ? 0 : n + 1;
            end
            if (in_valid && n == H * W - 1) begin
                tail <= TAIL;
            end else if (tail_on && push) begin
                tail <= tail - 1;
            end
            if (emit) begin
                prow <= orow; pcol <= ocol;
                if (last_out) begin
                    orow <= 0; ocol <= 0;
                end else if (ocol == W - 1) begin
                    orow <= orow + 1; ocol <= 0;
                end else begin
                    ocol <= ocol + 1;
                end
            end
        end
    end

    localparam CD = C * DB;
    localparam NS = (DEPTH - 1) * DS + 1;  // stages: pixel position j at stage j*DS
    wire [NS*CD-1:0] st;
    generate
        if (DS > 1) begin : g_ds
            opq_digit_chain #(.C(C), .DB(DB), .DS(DS), .DEPTH(DEPTH)) u_chain (.clk(clk), .rst(rst), .push(push),
                .pix(pix), .stages(st));
        end else begin : g_pix
            assign st = sr;
        end
    endgenerate
    genvar kh, kw;
    generate
        for (kh = 0; kh < KH; kh = kh + 1) begin : g_row
            for (kw = 0; kw < KW; kw = kw + 1) begin : g_col
                localparam OFF = D + PH * W + PW - kh * W - kw;
                wire row_ok = (prow + kh >= PH) && (prow + kh < H + PH);
                wire col_ok = (pcol + kw >= PW) && (pcol + kw < W + PW);
                assign out_data[(kh*KW+kw)*CD +: CD] = (row_ok && col_ok) ? st[OFF*DS*CD +: CD] : {CD{1'b0}};
            end
        end
    endgenerate
endmodule
