// opq_frame_rx: the device side of the opq-hw serial protocol, receiving (README, "Serial
// protocol"; host side opq_hw.hil). A frame is
//   SYNC 0xA5 | VERSION | TYPE | LEN (2 bytes, little-endian) | PAYLOAD (LEN bytes) | CRC16 (2 bytes, LE)
// with the CRC-16/CCITT-FALSE over VERSION..PAYLOAD (opq_crc16). Bytes other than SYNC between
// frames are dropped. An INFER frame (type 0x01) whose payload is exactly IN_LEN bytes is kept in a
// buffer and, once its CRC has checked, streamed to the core (m_valid/m_ready, m_last on the last
// byte); a PING (type 0x02, no payload) raises `ping`. Anything else raises `err` for one cycle
// with a code and a detail byte, and the receiver goes back to hunting for SYNC:
//   0x01 CRC mismatch, 0x02 wrong version (detail: the version byte), 0x03 wrong length,
//   0x04 unknown type (detail: the type), 0x05 frame cut short (no byte for TIMEOUT_CLKS cycles
//   inside a frame), 0x06 overrun (a byte arrived while the previous frame was still being
//   streamed to the core), 0x07 UART framing error (a stop bit was low) inside a frame.
// It never waits forever: inside a frame, every state either receives a byte or times out.
module opq_frame_rx #(
    parameter VERSION = 8'h01,
    parameter IN_LEN = 64,        // payload bytes of an INFER frame (the input tensor)
    parameter MAX_LEN = 4096,     // a header announcing more is refused at once
    parameter TIMEOUT_CLKS = 4096 // inside a frame: the longest silence between two bytes
) (
    input clk,
    input rst,
    input in_valid,       // from opq_uart_rx
    input [7:0] in_data,
    input in_frame_err,
    output m_valid,       // the payload of a checked INFER frame, to the core
    output [7:0] m_data,
    output m_last,
    input m_ready,
    output reg ping,
    output reg err,
    output reg [7:0] err_code,
    output reg [7:0] err_detail
);
    localparam SYNC = 8'hA5;
    localparam T_INFER = 8'h01, T_PING = 8'h02;
    localparam HUNT = 4'd0, VER = 4'd1, TYP = 4'd2, LEN0 = 4'd3, LEN1 = 4'd4, PAY = 4'd5, CRC0 = 4'd6,
               CRC1 = 4'd7, DRAIN = 4'd8;
    localparam AW = $clog2(IN_LEN + 1);

    reg [3:0] state;
    reg [7:0] ftype;
    reg [15:0] flen, got, crc, rcrc;
    reg [31:0] quiet;
    reg [AW-1:0] rd;
    reg [7:0] buffer [0:IN_LEN-1];
    wire [15:0] crc_next;
    opq_crc16 u_crc (.crc_in(crc), .data(in_data), .crc_out(crc_next));

    wire in_frame = (state != HUNT) && (state != DRAIN);
    assign m_valid = (state == DRAIN);
    assign m_data = buffer[rd];
    assign m_last = (rd == IN_LEN - 1);

    task fail(input [7:0] code, input [7:0] detail);
        begin
            err <= 1'b1;
            err_code <= code;
            err_detail <= detail;
            state <= HUNT;
        end
    endtask

    always @(posedge clk) begin
        err <= 1'b0;
        ping <= 1'b0;
        if (rst) begin
            state <= HUNT;
            quiet <= 0;
            rd <= 0;
        end else begin
            quiet <= (in_valid || !in_frame) ? 0 : quiet + 1;
            if (state == DRAIN) begin
                if (m_ready) begin
                    rd <= rd + 1;
                    if (rd == IN_LEN - 1) state <= HUNT;
                end
                if (in_valid) begin  // the host must wait for the answer; report, keep streaming
                    err <= 1'b1;
                    err_code <= 8'h06;
                    err_detail <= in_data;
                end
            end else if (in_frame && in_frame_err) begin
                fail(8'h07, 8'h00);
            end else if (in_frame && quiet >= TIMEOUT_CLKS) begin
                fail(8'h05, {4'h0, state});
            end else if (in_valid) begin
                case (state)
                    HUNT: if (in_data == SYNC) begin
                        state <= VER;
                        crc <= 16'hFFFF;
                    end
                    VER: if (in_data == VERSION) begin
                        state <= TYP;
                        crc <= crc_next;
                    end else if (in_data != SYNC)  // a repeated SYNC re-synchronises
                        fail(8'h02, in_data);
                    TYP: begin
                        ftype <= in_data;
                        crc <= crc_next;
                        state <= LEN0;
                    end
                    LEN0: begin
                        flen[7:0] <= in_data;
                        crc <= crc_next;
                        state <= LEN1;
                    end
                    LEN1: begin
                        flen[15:8] <= in_data;
                        crc <= crc_next;
                        got <= 0;
                        if ({in_data, flen[7:0]} > MAX_LEN)
                            fail(8'h03, in_data);
                        else
                            state <= ({in_data, flen[7:0]} == 0) ? CRC0 : PAY;
                    end
                    PAY: begin
                        if (got < IN_LEN) buffer[got[AW-1:0]] <= in_data;
                        crc <= crc_next;
                        got <= got + 1;
                        if (got + 1 == flen) state <= CRC0;
                    end
                    CRC0: begin
                        rcrc[7:0] <= in_data;
                        state <= CRC1;
                    end
                    CRC1: begin
                        if ({in_data, rcrc[7:0]} != crc)
                            fail(8'h01, 8'h00);
                        else if (ftype == T_INFER && flen == IN_LEN) begin
                            rd <= 0;
                            state <= DRAIN;
                        end else if (ftype == T_PING && flen == 0) begin
                            ping <= 1'b1;
                            state <= HUNT;
                        end else if (ftype == T_INFER || ftype == T_PING)
                            fail(8'h03, flen[7:0]);
                        else
                            fail(8'h04, ftype);
                    end
                    default: state <= HUNT;
                endcase
            end
        end
    end
endmodule
