// The hardware presets, embedded so that every command works without a file. Each text is
// data/hw/<name>.json verbatim (tests/sim/hardware_test.cpp checks that they stay equal).
#include "occam/sim.hpp"

#include <array>

namespace occam {
namespace {

constexpr std::array<HardwarePreset, 3> kPresets = {{
    {"large", R"json({
  "name": "large",
  "description": "DaDianNao-like node: 36 MiB on-chip eDRAM, 4096 16-bit MACs at 606 MHz, 64-chip system",
  "chips": 64,
  "sram_bytes": "36MiB",
  "macs_per_cycle": 4096,
  "clock_ghz": 0.606,
  "dram_gb_per_s": 12.8,
  "link_gb_per_s": 25.6,
  "bytes_per_element": 2,
  "energy_pj": { "mac": 1.5, "sram_byte": 2.5, "dram_byte": 160, "link_byte": 9.4 },
  "sources": {
    "sram_bytes": "Chen et al., DaDianNao, MICRO 2014: 32 MB synapse eDRAM + 4 MB neuron buffers per node",
    "macs_per_cycle": "DaDianNao: 16 tiles x 256 16-bit multipliers (16x16 NFU) per node",
    "clock_ghz": "DaDianNao: 606 MHz",
    "chips": "DaDianNao: 64-node system",
    "link_gb_per_s": "DaDianNao: four HyperTransport 2.0 links of 6.4 GB/s per direction",
    "dram_gb_per_s": "our assumption: one 64-bit DDR3-1600 channel (12.8 GB/s); DaDianNao keeps everything on chip and specifies none",
    "bytes_per_element": "DaDianNao: 16-bit fixed point",
    "energy_pj.mac": "Horowitz, ISSCC 2014, 45 nm: 16-bit FP multiply 1.1 pJ + add 0.4 pJ",
    "energy_pj.sram_byte": "Horowitz, ISSCC 2014, 45 nm: 64-bit read from a 32 KB SRAM bank 20 pJ = 2.5 pJ/byte",
    "energy_pj.dram_byte": "Horowitz, ISSCC 2014, 45 nm: 32-bit DRAM access 640 pJ = 160 pJ/byte",
    "energy_pj.link_byte": "Poulton et al., JSSC 2013: ground-referenced signalling, 1.17 pJ/bit = 9.4 pJ/byte"
  }
}
)json"},
    {"edge", R"json({
  "name": "edge",
  "description": "NVDLA nv_full-like edge accelerator: 512 KiB convolution buffer, 1024 FP16 MACs at 1 GHz, one LPDDR4 channel",
  "chips": 16,
  "sram_bytes": "512KiB",
  "macs_per_cycle": 1024,
  "clock_ghz": 1.0,
  "dram_gb_per_s": 25.6,
  "link_gb_per_s": 15.75,
  "bytes_per_element": 2,
  "energy_pj": { "mac": 1.5, "sram_byte": 2.5, "dram_byte": 160, "link_byte": 9.4 },
  "sources": {
    "sram_bytes": "NVDLA nv_full configuration: convolution buffer of 512 KiB (nvdla.org, hardware architecture, 'Convolution Buffer')",
    "macs_per_cycle": "NVDLA nv_full: 2048 INT8 or 1024 FP16/INT16 MACs per cycle (nvdla.org, 'Convolution Core')",
    "clock_ghz": "NVDLA reference frequency 1 GHz (nvdla.org, performance estimates)",
    "dram_gb_per_s": "one 64-bit LPDDR4-3200 channel: 3200 MT/s x 8 B = 25.6 GB/s",
    "link_gb_per_s": "PCIe 4.0 x8: 16 GT/s x 8 lanes x 128/130 = 15.75 GB/s",
    "bytes_per_element": "FP16 activations and weights",
    "chips": "our choice: a 16-chip board, so that STAP has chips to place",
    "energy_pj.mac": "Horowitz, ISSCC 2014, 45 nm: 16-bit FP multiply 1.1 pJ + add 0.4 pJ",
    "energy_pj.sram_byte": "Horowitz, ISSCC 2014, 45 nm: 64-bit read from a 32 KB SRAM bank 20 pJ = 2.5 pJ/byte",
    "energy_pj.dram_byte": "Horowitz, ISSCC 2014, 45 nm: 32-bit DRAM access 640 pJ = 160 pJ/byte",
    "energy_pj.link_byte": "Poulton et al., JSSC 2013: ground-referenced signalling, 1.17 pJ/bit = 9.4 pJ/byte"
  }
}
)json"},
    {"fpga", R"json({
  "name": "fpga",
  "description": "Xilinx ZCU102-like board (XCZU9EG): 4 MiB of block RAM, 2048 16-bit MACs at 200 MHz, DDR4",
  "chips": 16,
  "sram_bytes": 4202496,
  "macs_per_cycle": 2048,
  "clock_ghz": 0.2,
  "dram_gb_per_s": 19.2,
  "link_gb_per_s": 5.0,
  "bytes_per_element": 2,
  "energy_pj": { "mac": 1.5, "sram_byte": 2.5, "dram_byte": 160, "link_byte": 9.4 },
  "sources": {
    "sram_bytes": "XCZU9EG: 912 block RAMs of 36 Kb = 4,202,496 bytes (Xilinx DS891, Zynq UltraScale+ MPSoC overview)",
    "macs_per_cycle": "XCZU9EG: 2520 DSP48E2 slices, one 16-bit MAC each per cycle; 2048 used by a power-of-two array",
    "clock_ghz": "typical clock of HLS CNN accelerators on UltraScale+ (200 MHz)",
    "dram_gb_per_s": "ZCU102 processing-system DDR4-2400, 64-bit: 19.2 GB/s (Xilinx UG1182)",
    "link_gb_per_s": "our assumption: Aurora over four 12.5 Gb/s GTH transceivers, about 5 GB/s",
    "chips": "our choice: 16 boards",
    "bytes_per_element": "16-bit fixed point, as FPGA CNN accelerators commonly use",
    "energy_pj.mac": "ASIC figures (Horowitz, ISSCC 2014, 45 nm, 16-bit FP multiply + add); an FPGA spends more per operation, so only ratios between methods are meaningful",
    "energy_pj.sram_byte": "Horowitz, ISSCC 2014, 45 nm: 64-bit read from a 32 KB SRAM bank 20 pJ = 2.5 pJ/byte",
    "energy_pj.dram_byte": "Horowitz, ISSCC 2014, 45 nm: 32-bit DRAM access 640 pJ = 160 pJ/byte",
    "energy_pj.link_byte": "Poulton et al., JSSC 2013: ground-referenced signalling, 1.17 pJ/bit = 9.4 pJ/byte"
  }
}
)json"},
}};

}  // namespace

std::span<const HardwarePreset> hardware_presets() { return kPresets; }

// The large multi-chip system: the one where every zoo model's plan gets a chip per partition.
std::string_view default_hardware_name() { return kPresets.front().name; }

}  // namespace occam
