// Verilator harness for a serial top (module with ports clk, rst, rx, tx; built with
// --prefix Vtwin): plays a script of bytes and idle gaps onto `rx` as 8N1 UART at a given bit
// period, decodes everything the design sends on `tx` with its own UART receiver, stamps cycles.
// usage: tb SCRIPT OUT CLKS_PER_BIT
//   SCRIPT: one command per line: "b <byte>" sends a byte (back to back with the previous one),
//           "x <byte>" sends it with a low stop bit (a framing error), "i <cycles>" holds the
//           line idle (high) that long. The run ends after the script.
//   OUT   : "R <cycle> <byte>" per byte received from tx, "F <cycle>" for a low stop bit on tx,
//           "E <cycles>" at the end.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "Vtwin.h"
#include "verilated.h"

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s SCRIPT OUT CLKS_PER_BIT\n", argv[0]);
        return 2;
    }
    const long cpb = std::atol(argv[3]);
    if (cpb < 4) { std::fprintf(stderr, "CLKS_PER_BIT must be >= 4\n"); return 2; }
    FILE* fi = std::fopen(argv[1], "r");
    if (!fi) { std::perror("script"); return 2; }
    // the rx line level for every cycle, built from the script
    std::vector<uint8_t> line;
    char op;
    long v;
    for (int k = 0; k < 20 * cpb; ++k) line.push_back(1);  // idle after reset
    while (std::fscanf(fi, " %c %ld", &op, &v) == 2) {
        if (op == 'b' || op == 'x') {
            int bits[10] = {0};
            for (int i = 0; i < 8; ++i) bits[1 + i] = (v >> i) & 1;
            bits[9] = op == 'b';
            for (int b = 0; b < 10; ++b)
                for (long c = 0; c < cpb; ++c) line.push_back((uint8_t)bits[b]);
        } else if (op == 'i') {
            for (long c = 0; c < v; ++c) line.push_back(1);
        } else {
            std::fprintf(stderr, "bad script command %c\n", op);
            return 2;
        }
    }
    std::fclose(fi);
    FILE* fo = std::fopen(argv[2], "w");
    if (!fo) { std::perror("output"); return 2; }

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vtwin>(ctx.get());
    top->clk = 0;
    top->rst = 1;
    top->rx = 1;
    for (int i = 0; i < 8; ++i) { top->clk = !top->clk; top->eval(); }
    top->rst = 0;
    // the harness's own receiver on tx
    int rstate = 0;  // 0 idle, 1 in a byte
    long rcnt = 0, rbit = 0;
    unsigned rbyte = 0;
    for (size_t cyc = 0; cyc < line.size(); ++cyc) {
        top->rx = line[cyc];
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        const int t = top->tx;
        if (rstate == 0) {
            if (!t) { rstate = 1; rcnt = cpb / 2; rbit = 0; rbyte = 0; }
        } else if (--rcnt == 0) {
            rcnt = cpb;
            if (rbit == 0) {
                if (t) rstate = 0;  // a glitch, not a start bit
            } else if (rbit <= 8) {
                rbyte |= (unsigned)t << (rbit - 1);
            } else {
                if (t) std::fprintf(fo, "R %zu %u\n", cyc, rbyte);
                else std::fprintf(fo, "F %zu\n", cyc);
                rstate = 0;
            }
            ++rbit;
        }
    }
    std::fprintf(fo, "E %zu\n", line.size());
    std::fclose(fo);
    top->final();
    return 0;
}
