// Verilator harness for a serial top (module with ports clk, rst, rx, tx; built with
// --prefix Vtwin): plays a script of bytes and idle gaps onto `rx` as 8N1 UART at a given bit
// period, decodes everything the design sends on `tx` with its own UART receiver, stamps cycles.
// usage: tb SCRIPT OUT CLKS_PER_BIT
//   SCRIPT: one command per line: "b <byte>" sends a byte (back to back with the previous one),
//           "x <byte>" sends it with a low stop bit (a framing error), "i <cycles>" holds the
//           line idle (high) that long. The run ends after the script.
//   OUT   : "R <cycle> <byte>" per byte received from tx, "F <cycle>" for a low stop bit on tx,
//           "E <cycles>" at the end.
// usage: tb - - CLKS_PER_BIT [EVENTS]   (interactive: the twin of a serial port)
//   bytes read from stdin are sent on rx as they come (back to back: more are read before the
//   line runs dry), bytes received from tx are written to stdout; the clock runs until stdin
//   closes (a pipe's end, or a pseudo-terminal whose other side was closed: opq_hw.hil.PtyTwin).
//   stdin and stdout may be one pseudo-terminal. At the end "cycles <N>" goes to stderr. EVENTS,
//   if given: "S <cycle>" when host bytes start onto an idle line, "R <cycle> <byte>" per byte
//   received from tx (what benchmarks/bench_hil.py times the link with).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <deque>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "Vtwin.h"
#include "verilated.h"

// the harness's receiver on tx: returns a byte (0..255) when one completes, -1 otherwise, -2 on a low stop bit
struct TxDecoder {
    long cpb, cnt = 0, bit = 0;
    int state = 0;
    unsigned byte = 0;
    explicit TxDecoder(long c) : cpb(c) {}
    int step(int t) {
        if (state == 0) {
            if (!t) { state = 1; cnt = cpb / 2; bit = 0; byte = 0; }
            return -1;
        }
        if (--cnt != 0) return -1;
        cnt = cpb;
        int out = -1;
        if (bit == 0) {
            if (t) state = 0;  // a glitch, not a start bit
        } else if (bit <= 8) {
            byte |= (unsigned)t << (bit - 1);
        } else {
            out = t ? (int)byte : -2;
            state = 0;
        }
        ++bit;
        return out;
    }
};

static void push_byte(std::deque<uint8_t>& line, unsigned v, long cpb, bool stop = true) {
    for (int b = 0; b < 10; ++b) {
        const int level = b == 0 ? 0 : b == 9 ? (int)stop : (v >> (b - 1)) & 1;
        for (long c = 0; c < cpb; ++c) line.push_back((uint8_t)level);
    }
}

static void reset(Vtwin* top) {
    top->clk = 0;
    top->rst = 1;
    top->rx = 1;
    for (int i = 0; i < 8; ++i) { top->clk = !top->clk; top->eval(); }
    top->rst = 0;
}

// one clock cycle with `rx` on the line; returns the tx level after it
static int tick(Vtwin* top, int rx) {
    top->rx = rx;
    top->clk = 1;
    top->eval();
    top->clk = 0;
    top->eval();
    return top->tx;
}

// write all of `n` bytes to a descriptor that may be non-blocking (a pseudo-terminal shares the
// O_NONBLOCK flag set on stdin with stdout): wait while the host has not read yet
static bool write_all(int fd, const unsigned char* p, size_t n) {
    while (n) {
        const ssize_t w = write(fd, p, n);
        if (w > 0) { p += w; n -= (size_t)w; continue; }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) { usleep(100); continue; }
        return false;
    }
    return true;
}

static int interactive(long cpb, const char* events) {
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    FILE* ev = events ? std::fopen(events, "w") : nullptr;
    if (events && !ev) { std::perror("events"); return 2; }
    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vtwin>(ctx.get());
    reset(top.get());
    std::deque<uint8_t> line;
    TxDecoder dec(cpb);
    long idle_polls = 0;
    const size_t low = 64 * 4;  // read more while fewer cycles than this are queued: no gap between bytes
    unsigned long cyc = 0;
    for (;; ++cyc) {
        // poll stdin every 256 cycles on an idle line, every 64 while the queued bytes run out
        const bool poll = line.empty() ? (cyc & 255) == 0 : line.size() < low && (cyc & 63) == 0;
        if (poll && cyc >= (unsigned long)(20 * cpb)) {  // an idle line after reset first
            unsigned char buf[256];
            const ssize_t n = read(0, buf, sizeof buf);
            if (n == 0) break;  // stdin closed: the host is done
            if (n > 0) {
                if (ev && line.empty()) std::fprintf(ev, "S %lu\n", cyc);
                for (ssize_t i = 0; i < n; ++i) push_byte(line, buf[i], cpb);
                idle_polls = 0;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                break;  // EIO: the pseudo-terminal's other side was closed
            } else if (line.empty() && ++idle_polls > 65536 && dec.state == 0) {
                usleep(200);  // nothing sent for 16M cycles (longer than a computation): stop spinning
            }
        }
        const int level = line.empty() ? 1 : line.front();
        if (!line.empty()) line.pop_front();
        const int r = dec.step(tick(top.get(), level));
        if (r >= 0) {
            const unsigned char b = (unsigned char)r;
            if (ev) std::fprintf(ev, "R %lu %d\n", cyc, r);
            if (!write_all(1, &b, 1)) break;
        }
    }
    if (ev) std::fclose(ev);
    std::fprintf(stderr, "cycles %lu\n", cyc);
    top->final();
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s SCRIPT OUT CLKS_PER_BIT\n", argv[0]);
        return 2;
    }
    const long cpb = std::atol(argv[3]);
    if (cpb < 4) { std::fprintf(stderr, "CLKS_PER_BIT must be >= 4\n"); return 2; }
    if (argv[1][0] == '-' && argv[1][1] == 0) return interactive(cpb, argc > 4 ? argv[4] : nullptr);
    FILE* fi = std::fopen(argv[1], "r");
    if (!fi) { std::perror("script"); return 2; }
    // the rx line level for every cycle, built from the script
    std::vector<uint8_t> line;
    char op;
    long v;
    for (int k = 0; k < 20 * cpb; ++k) line.push_back(1);  // idle after reset
    while (std::fscanf(fi, " %c %ld", &op, &v) == 2) {
        if (op == 'b' || op == 'x') {
            std::deque<uint8_t> bits;
            push_byte(bits, (unsigned)v, cpb, op == 'b');
            line.insert(line.end(), bits.begin(), bits.end());
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
    reset(top.get());
    TxDecoder dec(cpb);  // the harness's own receiver on tx
    for (size_t cyc = 0; cyc < line.size(); ++cyc) {
        const int r = dec.step(tick(top.get(), line[cyc]));
        if (r >= 0) std::fprintf(fo, "R %zu %d\n", cyc, r);
        else if (r == -2) std::fprintf(fo, "F %zu\n", cyc);
    }
    std::fprintf(fo, "E %zu\n", line.size());
    std::fclose(fo);
    top->final();
    return 0;
}
