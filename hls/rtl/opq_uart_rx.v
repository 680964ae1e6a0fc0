// opq_uart_rx: 8N1 UART receiver. CLKS_PER_BIT clock cycles per bit (clock / baud, >= 4).
// The line is synchronised through two flip-flops; a start bit is confirmed at its middle, each
// data bit (LSB first) and the stop bit are sampled at their middle. `valid` pulses one cycle with
// `data` for a byte whose stop bit was high; `frame_err` pulses instead when it was low (the byte
// is dropped). A glitch shorter than half a bit on the idle line is ignored.
module opq_uart_rx #(
    parameter CLKS_PER_BIT = 104
) (
    input clk,
    input rst,
    input rx,
    output reg valid,
    output reg [7:0] data,
    output reg frame_err
);
    localparam IDLE = 2'd0, START = 2'd1, DATA = 2'd2, STOP = 2'd3;
    reg rx_m = 1'b1, rx_s = 1'b1;
    reg [1:0] state;
    reg [15:0] cnt;
    reg [2:0] idx;
    always @(posedge clk) begin
        rx_m <= rx;
        rx_s <= rx_m;
        valid <= 1'b0;
        frame_err <= 1'b0;
        if (rst) begin
            state <= IDLE;
            cnt <= 0;
            idx <= 0;
        end else begin
            case (state)
                IDLE: if (!rx_s) begin
                    state <= START;
                    cnt <= CLKS_PER_BIT / 2 - 1;
                end
                START: if (cnt == 0) begin
                    if (!rx_s) begin
                        state <= DATA;
                        cnt <= CLKS_PER_BIT - 1;
                        idx <= 0;
                    end else
                        state <= IDLE;
                end else
                    cnt <= cnt - 1;
                DATA: if (cnt == 0) begin
                    data <= {rx_s, data[7:1]};
                    cnt <= CLKS_PER_BIT - 1;
                    idx <= idx + 1;
                    if (idx == 3'd7) state <= STOP;
                end else
                    cnt <= cnt - 1;
                STOP: if (cnt == 0) begin
                    if (rx_s) valid <= 1'b1;
                    else frame_err <= 1'b1;
                    state <= IDLE;
                end else
                    cnt <= cnt - 1;
            endcase
        end
    end
endmodule
