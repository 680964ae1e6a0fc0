// opq_crc16: one byte of CRC-16/CCITT-FALSE (polynomial 0x1021, MSB first, initial value 0xFFFF,
// no reflection, no final XOR; check value 0x29B1 for "123456789"). Combinational:
// crc_out = the CRC after `data` when it was crc_in before. The host side is opq_hw.hil.crc16.
module opq_crc16 (
    input [15:0] crc_in,
    input [7:0] data,
    output [15:0] crc_out
);
    wire [15:0] c0 = crc_in ^ {data, 8'h00};
    wire [15:0] c1 = c0[15] ? {c0[14:0], 1'b0} ^ 16'h1021 : {c0[14:0], 1'b0};
    wire [15:0] c2 = c1[15] ? {c1[14:0], 1'b0} ^ 16'h1021 : {c1[14:0], 1'b0};
    wire [15:0] c3 = c2[15] ? {c2[14:0], 1'b0} ^ 16'h1021 : {c2[14:0], 1'b0};
    wire [15:0] c4 = c3[15] ? {c3[14:0], 1'b0} ^ 16'h1021 : {c3[14:0], 1'b0};
    wire [15:0] c5 = c4[15] ? {c4[14:0], 1'b0} ^ 16'h1021 : {c4[14:0], 1'b0};
    wire [15:0] c6 = c5[15] ? {c5[14:0], 1'b0} ^ 16'h1021 : {c5[14:0], 1'b0};
    wire [15:0] c7 = c6[15] ? {c6[14:0], 1'b0} ^ 16'h1021 : {c6[14:0], 1'b0};
    assign crc_out = c7[15] ? {c7[14:0], 1'b0} ^ 16'h1021 : {c7[14:0], 1'b0};
endmodule
