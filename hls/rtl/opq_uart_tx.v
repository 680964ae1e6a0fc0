// opq_uart_tx: 8N1 UART transmitter, CLKS_PER_BIT clock cycles per bit. Takes a byte when
// `valid && ready`; `ready` is high while the line is idle (after the stop bit of the last byte).
module opq_uart_tx #(
    parameter CLKS_PER_BIT = 104
) (
    input clk,
    input rst,
    input valid,
    input [7:0] data,
    output ready,
    output tx
);
    reg [9:0] shift;  // {stop, data, start}, sent LSB first
    reg [3:0] left;   // bits still to send
    reg [15:0] cnt;
    reg line = 1'b1;
    assign ready = (left == 0);
    assign tx = line;
    always @(posedge clk) begin
        if (rst) begin
            left <= 0;
            cnt <= 0;
            line <= 1'b1;
        end else if (left == 0) begin
            if (valid) begin
                shift <= {1'b1, data, 1'b0};
                left <= 4'd10;
                cnt <= 0;
            end
        end else if (cnt == 0) begin
            line <= shift[0];
            shift <= {1'b1, shift[9:1]};
            cnt <= CLKS_PER_BIT - 1;
        end else if (cnt == 1 && left != 0) begin
            cnt <= 0;
            left <= left - 1;
        end else
            cnt <= cnt - 1;
    end
endmodule
