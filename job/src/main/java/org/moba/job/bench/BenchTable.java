package org.moba.job.bench;

import java.util.Comparator;
import java.util.List;

/** The bench summary as a fixed-width text table, one line per (device, shape). */
final class BenchTable {
    private BenchTable() {
    }

    static String render(List<BenchMeasurement> rows) {
        StringBuilder sb = new StringBuilder();
        String fmt = "%-14s %-5s %-4s %-4s %-13s %-40s %10s %15s %9s %9s %10s %8s %9s %11s %s%n";
        sb.append(String.format(fmt, "host", "exec", "gpu", "dev", "pci bus", "shape", "moba ms", "p10-p90",
                "gate ms", "attn ms", "dense ms", "speedup", "TFLOP/s", "tokens/s", ""));
        rows.stream().sorted(Comparator.comparing(BenchMeasurement::getShape)
                        .thenComparing(BenchMeasurement::getHost).thenComparing(BenchMeasurement::getDeviceOrdinal))
                .forEach(r -> sb.append(String.format(fmt, clip(r.getHost(), 14), clip(dash(r.getExecutorId()), 5),
                        clip(dash(r.getGpuAddresses()), 4),
                        r.getDeviceOrdinal() < 0 ? "cpu" : Integer.toString(r.getDeviceOrdinal()),
                        clip(dash(r.getPciBusId()), 13), clip(r.getShape(), 40),
                        String.format("%.3f", r.getMobaMedianMs()),
                        String.format("%.3f-%.3f", r.getMobaP10Ms(), r.getMobaP90Ms()),
                        String.format("%.3f", r.getGateMedianMs()), String.format("%.3f", r.getAttentionMedianMs()),
                        String.format("%.3f", r.getDenseMedianMs()), String.format("%.2fx", r.getSpeedupOverDense()),
                        String.format("%.2f", r.getUsefulTflops()), String.format("%.3g", r.getTokensPerSecond()),
                        r.isStraggler() ? "STRAGGLER" : "")));
        return sb.toString();
    }

    private static String dash(String s) {
        return s == null ? "-" : s;
    }

    private static String clip(String s, int width) {
        return s.length() <= width ? s : s.substring(0, width - 1) + "~";
    }
}
