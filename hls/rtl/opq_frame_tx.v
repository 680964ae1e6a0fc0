// opq_frame_tx: the device side of the opq-hw serial protocol, sending (see opq_frame_rx for the
// frame layout). It collects the core's OUT_LEN result bytes (BEAT bytes per beat, little-endian)
// into a buffer at full speed (s_ready is high while it is not sending; `idle` says it is neither
// sending nor holding a result, and the link starts feeding the core only then, so a core without
// output backpressure never loses a value: nothing is sent while a result is being collected),
// counts the compute
// cycles from `start` (the core took the first input byte) to the last result byte, and answers:
//   RESULT 0x81: the OUT_LEN bytes, then the cycle count (4 bytes, little-endian)
//   ERROR  0xE0: error code, detail (see opq_frame_rx)
//   PONG   0x82: IN_LEN, OUT_LEN (2 bytes each, little-endian)
// A result is sent first, then a pending error, then a pending pong; an error raised while one is
// already pending is dropped (the host sees the first).
module opq_frame_tx #(
    parameter VERSION = 8'h01,
    parameter IN_LEN = 64,
    parameter OUT_LEN = 10,
    parameter BEAT = 1  // bytes per result beat; OUT_LEN is a multiple of it
) (
    input clk,
    input rst,
    input s_valid,          // result beats from the core
    input [8*BEAT-1:0] s_data,
    output s_ready,
    output idle,
    input start,            // the core accepted the first input byte of a frame
    input err,
    input [7:0] err_code,
    input [7:0] err_detail,
    input ping,
    output tx_valid,        // to opq_uart_tx
    output [7:0] tx_data,
    input tx_ready
);
    localparam SYNC = 8'hA5;
    localparam K_RESULT = 2'd0, K_ERROR = 2'd1, K_PONG = 2'd2;
    localparam [15:0] RLEN = OUT_LEN + 4;

    reg [7:0] obuf [0:OUT_LEN-1];
    reg [15:0] wptr;
    reg full, running, sending, err_pend, ping_pend;
    reg [31:0] count, cycles;
    reg [7:0] e_code, e_detail;
    reg [1:0] kind;
    reg [15:0] pos, crc;
    wire [15:0] crc_next;

    wire [15:0] plen = (kind == K_RESULT) ? RLEN : (kind == K_ERROR) ? 16'd2 : 16'd4;
    wire [15:0] pi = pos - 16'd5;  // payload index
    reg [7:0] pbyte;
    always @(*) begin
        case (kind)
            K_RESULT: pbyte = (pi < OUT_LEN) ? obuf[pi] : cycles[8 * (pi - OUT_LEN) +: 8];
            K_ERROR: pbyte = (pi == 0) ? e_code : e_detail;
            default: case (pi[1:0])
                2'd0: pbyte = IN_LEN[7:0];
                2'd1: pbyte = IN_LEN[15:8];
                2'd2: pbyte = OUT_LEN[7:0];
                default: pbyte = OUT_LEN[15:8];
            endcase
        endcase
    end
    reg [7:0] cur;
    always @(*) begin
        if (pos == 0) cur = SYNC;
        else if (pos == 1) cur = VERSION;
        else if (pos == 2) cur = (kind == K_RESULT) ? 8'h81 : (kind == K_ERROR) ? 8'hE0 : 8'h82;
        else if (pos == 3) cur = plen[7:0];
        else if (pos == 4) cur = plen[15:8];
        else if (pos < 5 + plen) cur = pbyte;
        else if (pos == 5 + plen) cur = crc[7:0];
        else cur = crc[15:8];
    end
    opq_crc16 u_crc (.crc_in(crc), .data(cur), .crc_out(crc_next));

    assign s_ready = !sending && !full;
    assign idle = !sending && !full;
    assign tx_valid = sending;
    assign tx_data = cur;
    wire take = s_valid && s_ready;
    wire last_in = take && (wptr == OUT_LEN - BEAT);
    integer k;

    always @(posedge clk) begin
        if (rst) begin
            wptr <= 0;
            full <= 1'b0;
            running <= 1'b0;
            sending <= 1'b0;
            err_pend <= 1'b0;
            ping_pend <= 1'b0;
            count <= 0;
        end else begin
            // compute-cycle counter: start .. last result byte
            if (start) begin
                running <= 1'b1;
                count <= 1;
            end else if (running)
                count <= count + 1;
            if (take) begin
                for (k = 0; k < BEAT; k = k + 1)
                    obuf[wptr + k] <= s_data[8 * k +: 8];
                wptr <= wptr + BEAT;
                if (last_in) begin
                    full <= 1'b1;
                    running <= 1'b0;
                    wptr <= 0;
                    cycles <= start ? 32'd0 : count;
                end
            end
            if (!sending) begin
                // an error or pong waits while a result is being collected (running, or part of it in)
                if (full || ((err_pend || ping_pend) && !running && !start && wptr == 0)) begin
                    sending <= 1'b1;
                    pos <= 0;
                    crc <= 16'hFFFF;
                    kind <= full ? K_RESULT : err_pend ? K_ERROR : K_PONG;
                end
            end else if (tx_ready) begin
                if (pos != 0 && pos < 5 + plen) crc <= crc_next;
                pos <= pos + 1;
                if (pos == 6 + plen) begin
                    sending <= 1'b0;
                    if (kind == K_RESULT) full <= 1'b0;
                    else if (kind == K_ERROR) err_pend <= 1'b0;
                    else ping_pend <= 1'b0;
                end
            end
            // after the send logic, so that a request arriving as the previous one is cleared is kept
            if (err && (!err_pend || (sending && tx_ready && pos == 6 + plen && kind == K_ERROR))) begin
                err_pend <= 1'b1;
                e_code <= err_code;
                e_detail <= err_detail;
            end
            if (ping) ping_pend <= 1'b1;
        end
    end
endmodule
