// Verilator harness for opq_top (opq-hw open RTL flow). Drives the pixel stream, records the
// logit stream with cycle stamps.
// usage: tb IN OUT [gap_permille] [seed] [expected_outputs]
//   IN : text, first line "n_frames pixels_per_frame", then one unsigned pixel word per line
//   OUT: text, "I <cycle>" when a frame's first pixel is accepted, "O <cycle> <word> <last>" per
//        output word, and "E <cycles>" at the end. A gap_permille > 0 drops s_valid at random.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "Vopq_top.h"
#include "verilated.h"

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s IN OUT [gap_permille] [seed]\n", argv[0]);
        return 2;
    }
    int gap = argc > 3 ? std::atoi(argv[3]) : 0;
    unsigned seed = argc > 4 ? (unsigned)std::atoi(argv[4]) : 1u;
    long expect = argc > 5 ? std::atol(argv[5]) : 0;
    std::srand(seed);
    FILE* fi = std::fopen(argv[1], "r");
    if (!fi) { std::perror("input"); return 2; }
    long n_frames = 0, ppf = 0;
    if (std::fscanf(fi, "%ld %ld", &n_frames, &ppf) != 2) { std::fprintf(stderr, "bad header\n"); return 2; }
    std::vector<uint32_t> px(n_frames * ppf);
    for (long i = 0; i < n_frames * ppf; ++i) {
        unsigned long v;
        if (std::fscanf(fi, "%lu", &v) != 1) { std::fprintf(stderr, "short input\n"); return 2; }
        px[i] = (uint32_t)v;
    }
    std::fclose(fi);
    FILE* fo = std::fopen(argv[2], "w");
    if (!fo) { std::perror("output"); return 2; }

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vopq_top>(ctx.get());
    top->clk = 0; top->rst = 1; top->s_valid = 0; top->s_data = 0;
    for (int i = 0; i < 4; ++i) { top->clk = 1; top->eval(); top->clk = 0; top->eval(); }
    top->rst = 0;
    long sent = 0, total = n_frames * ppf, outs = 0;
    long long cycle = 0, idle = 0;
    while (true) {
        bool drive = sent < total && !(gap > 0 && (std::rand() % 1000) < gap);
        top->s_valid = drive ? 1 : 0;
        top->s_data = drive ? px[sent] : 0;
        top->eval();  // settle: a beat is taken at the rising edge when s_valid && s_ready before it
        bool taken = drive && top->s_ready;
        top->clk = 1; top->eval();
        if (taken) {
            if (sent % ppf == 0) std::fprintf(fo, "I %lld\n", cycle);
            ++sent;
        }
        if (top->m_valid) {
            std::fprintf(fo, "O %lld %lu %d\n", cycle, (unsigned long)top->m_data, (int)top->m_last);
            ++outs; idle = 0;
        } else if (sent >= total) {
            if (++idle > 20000000) break;  // no output for 20M cycles: stop (the caller checks the count)
        }
        top->clk = 0; top->eval();
        ++cycle;
        if (sent >= total && expect > 0 && outs >= expect) break;
    }
    std::fprintf(fo, "E %lld\n", cycle);
    std::fclose(fo);
    top->final();
    return 0;
}
