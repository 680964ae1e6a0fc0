// opq_digit_chain: the storage of opq_window / opq_collect for a digit-serial consumer (DS > 1).
//
// A pixel of C channels, each DS digits of DB bits (channel c's digit k, k = 0 the most
// significant, at [c*DS*DB + (DS-1-k)*DB +: DB]), enters on `push`. The pixels are kept as digits
// in a shift register of stages (stage j at [j*C*DB +: C*DB]) that moves one stage on the push
// cycle and on each of the DS-1 cycles after it: k cycles after a push (k < DS) stage 0 holds
// digit k of the newest pixel and stage j*DS digit k of the pixel pushed j pushes earlier. So a
// reader of pixel position j sees its current digit at a fixed place: the digits are read once,
// when the pixel enters, instead of through a DS:1 multiplexer at every reader.
// Pushes come at least DS cycles apart (the digit-serial stream's pixel period).
module opq_digit_chain #(
    parameter C = 1, parameter DB = 1, parameter DS = 8, parameter DEPTH = 1
) (
    input clk,
    input rst,
    input push,
    input [C*DS*DB-1:0] pix,
    output [((DEPTH-1)*DS+1)*C*DB-1:0] stages
);
    localparam CD = C * DB;
    localparam NS = (DEPTH - 1) * DS + 1;
    localparam RW = (DS - 1) * DB;  // digits of one channel still to enter after the first
    reg [$clog2(DS)-1:0] left;  // shifts owed to the newest pixel
    wire shift = push | (left != 0);
    reg [C*RW-1:0] rest;
    wire [CD-1:0] head;
    always @(posedge clk) begin
        if (rst) left <= 0;
        else if (push) left <= DS - 1;
        else if (left != 0) left <= left - 1'b1;
    end
    genvar c;
    generate
        for (c = 0; c < C; c = c + 1) begin : g_ch
            assign head[c*DB +: DB] = push ? pix[c*DS*DB + RW +: DB] : rest[c*RW + RW - DB +: DB];
            always @(posedge clk)
                if (push) rest[c*RW +: RW] <= pix[c*DS*DB +: RW];
                else if (shift) rest[c*RW +: RW] <= rest[c*RW +: RW] << DB;
        end
    endgenerate
    reg [NS*CD-1:0] sr;
    generate
        if (NS > 1) begin : g_sr
            always @(posedge clk) if (shift) sr <= {sr[(NS-1)*CD-1:0], head};
        end else begin : g_one
            always @(posedge clk) if (shift) sr <= head;
        end
    endgenerate
    assign stages = sr;
endmodule
