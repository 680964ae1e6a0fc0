// opq_collect: gathers the N pixels of a frame (PIX bits each) into one vector for a dense layer.
// Pixel p of the frame lands at [p*PIX +: PIX]; out_valid pulses for one cycle after the last
// pixel, while out_data holds the whole frame (it is overwritten as the next frame streams in,
// so the consumer registers it on that cycle).
module opq_collect #(
    parameter PIX = 8, parameter N = 64
) (
    input clk,
    input rst,
    input in_valid,
    input [PIX-1:0] in_data,
    output reg out_valid,
    output reg [N*PIX-1:0] out_data
);
    reg [15:0] cnt;
    always @(posedge clk) begin
        if (rst) begin
            cnt <= 0;
            out_valid <= 1'b0;
        end else begin
            out_valid <= in_valid && (cnt == N - 1);
            if (in_valid) begin
                if (N == 1) out_data <= in_data;
                else out_data <= {in_data, out_data[N*PIX-1:PIX]};
                cnt <= (cnt == N - 1) ? 0 : cnt + 1;
            end
        end
    end
endmodule
