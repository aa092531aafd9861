package org.moba.job.bench;

import java.io.IOException;
import java.util.Comparator;
import java.util.List;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.data.category.DefaultCategoryDataset;
import org.moba.job.HtmlReport;

/** The HTML report of {@code bench}: per-device times, throughput and speedup over dense, and stragglers. */
final class BenchReport {
    private BenchReport() {
    }

    static HtmlReport of(List<BenchMeasurement> rows) throws IOException {
        List<BenchMeasurement> sorted = rows.stream().sorted(Comparator.comparing(BenchMeasurement::getShape)
                .thenComparing(BenchMeasurement::getHost).thenComparing(BenchMeasurement::getDeviceOrdinal)).toList();
        HtmlReport report = new HtmlReport("MoBA bench");
        report.paragraph(rows.size() + " measurement(s) on " + rows.stream().map(BenchReport::device).distinct().count()
                + " device(s). Times are the compute phases (no host copies), medians over the repeats.");
        DefaultCategoryDataset ms = new DefaultCategoryDataset();
        DefaultCategoryDataset tflops = new DefaultCategoryDataset();
        DefaultCategoryDataset speedup = new DefaultCategoryDataset();
        for (BenchMeasurement r : sorted) {
            ms.addValue(r.getMobaMedianMs(), "MoBA " + device(r), r.getShape());
            ms.addValue(r.getDenseMedianMs(), "dense " + device(r), r.getShape());
            tflops.addValue(r.getUsefulTflops(), device(r), r.getShape());
            speedup.addValue(r.getSpeedupOverDense(), device(r), r.getShape());
        }
        report.heading("Time per shape").chart(ChartFactory.createBarChart("MoBA and dense causal, median ms",
                "shape", "ms", ms, PlotOrientation.HORIZONTAL, true, false, false));
        report.heading("Useful TFLOP/s").chart(ChartFactory.createBarChart("Useful TFLOP/s (4 D pairs / time)",
                "shape", "TFLOP/s", tflops, PlotOrientation.HORIZONTAL, true, false, false));
        report.heading("Speedup over dense").chart(ChartFactory.createBarChart("Dense ms / MoBA ms", "shape",
                "speedup", speedup, PlotOrientation.HORIZONTAL, true, false, false));
        report.heading("Measurements").table(List.of("host", "device", "shape", "MoBA ms", "p10", "p90", "gate ms",
                "attention ms", "dense ms", "speedup", "TFLOP/s", "tokens/s", "straggler"),
                sorted.stream().map(r -> List.of(r.getHost(), device(r), r.getShape(), f(r.getMobaMedianMs()),
                        f(r.getMobaP10Ms()), f(r.getMobaP90Ms()), f(r.getGateMedianMs()), f(r.getAttentionMedianMs()),
                        f(r.getDenseMedianMs()), f(r.getSpeedupOverDense()), f(r.getUsefulTflops()),
                        String.format("%.3g", r.getTokensPerSecond()), r.isStraggler() ? "STRAGGLER" : "")).toList());
        return report;
    }

    private static String device(BenchMeasurement r) {
        return r.getHost() + (r.getDeviceOrdinal() < 0 ? " cpu" : " gpu" + r.getDeviceOrdinal());
    }

    private static String f(double v) {
        return String.format("%.3f", v);
    }
}
