package org.moba.job.bench;

import java.awt.BasicStroke;
import java.awt.Color;
import java.io.IOException;
import java.text.DecimalFormat;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.LogAxis;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.plot.ValueMarker;
import org.jfree.chart.plot.XYPlot;
import org.jfree.chart.renderer.xy.XYLineAndShapeRenderer;
import org.jfree.data.category.DefaultCategoryDataset;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;
import org.moba.kernels.bench.Percentiles;
import org.moba.job.HtmlReport;
import org.moba.job.spark.TaskDevice;

/**
 * The HTML report of {@code bench}, the same views as {@code notebooks/bench_report.ipynb}: time per phase per
 * device, useful TFLOP/s and speedup over dense against sequence length, and each device against the cluster median
 * (stragglers).
 */
final class BenchReport {
    private BenchReport() {
    }

    static HtmlReport of(List<BenchMeasurement> rows, double stragglerMargin, List<Map<String, Object>> devices)
            throws IOException {
        List<BenchMeasurement> sorted = rows.stream().sorted(Comparator.comparing(BenchMeasurement::getConfig)
                .thenComparingDouble(BenchMeasurement::getMeanLength).thenComparing(BenchMeasurement::getShape)
                .thenComparing(BenchMeasurement::getHost).thenComparing(BenchMeasurement::getDeviceOrdinal)).toList();
        HtmlReport report = new HtmlReport("MoBA bench");
        report.paragraph(rows.size() + " measurement(s) on " + rows.stream().map(BenchReport::device).distinct().count()
                + " device(s). Times are the compute phases (no host copies), medians over the repeats.");

        DefaultCategoryDataset phases = new DefaultCategoryDataset();
        DefaultCategoryDataset ms = new DefaultCategoryDataset();
        for (BenchMeasurement r : sorted) {
            String cat = device(r) + " | " + r.getShape();
            phases.addValue(r.getGateMedianMs(), "gate (chunk means + top-k)", cat);
            phases.addValue(r.getAttentionMedianMs(), "attention", cat);
            phases.addValue(Math.max(0, r.getMobaMedianMs() - r.getGateMedianMs() - r.getAttentionMedianMs()),
                    "other compute", cat);
            phases.addValue(r.getCopyMedianMs(), "host copies", cat);
            ms.addValue(r.getMobaMedianMs(), "MoBA " + device(r), r.getShape());
            ms.addValue(r.getDenseMedianMs(), "dense " + device(r), r.getShape());
        }
        report.heading("Time per phase per device").chart(ChartFactory.createStackedBarChart(
                "MoBA median ms per phase", "device | shape", "ms", phases, PlotOrientation.HORIZONTAL, true, false,
                false));
        report.heading("MoBA and dense per shape").chart(ChartFactory.createBarChart(
                "MoBA and dense causal, median ms", "shape", "ms", ms, PlotOrientation.HORIZONTAL, true, false, false));

        report.heading("Useful TFLOP/s vs sequence length").chart(lengthChart(sorted,
                "Useful TFLOP/s (4 D attended pairs / time) vs mean sequence length", "TFLOP/s", false,
                BenchMeasurement::getUsefulTflops));
        JFreeChart speedup = lengthChart(sorted, "MoBA speedup over dense vs mean sequence length (log-log)",
                "dense ms / MoBA ms (log)", true, BenchMeasurement::getSpeedupOverDense);
        speedup.getXYPlot().addRangeMarker(new ValueMarker(1.0, Color.GRAY, new BasicStroke(1.5f)));
        report.heading("Speedup over dense vs sequence length").chart(speedup);

        DefaultCategoryDataset relative = new DefaultCategoryDataset();
        Map<String, List<BenchMeasurement>> byShape = sorted.stream().collect(Collectors.groupingBy(
                BenchMeasurement::getShape, java.util.LinkedHashMap::new, Collectors.toList()));
        byShape.forEach((shape, group) -> {
            double median = Percentiles.of(group.stream().mapToDouble(BenchMeasurement::getMobaMedianMs)
                    .toArray(), 0.5);
            group.forEach(r -> relative.addValue(r.getMobaMedianMs() / median, device(r), shape));
        });
        JFreeChart stragglers = ChartFactory.createBarChart("MoBA median ms / cluster median per shape (straggler"
                + " above the red line)", "shape", "relative time", relative, PlotOrientation.HORIZONTAL, true, false,
                false);
        ValueMarker limit = new ValueMarker(1 + stragglerMargin, Color.RED, new BasicStroke(2f));
        limit.setLabel("straggler margin " + stragglerMargin);
        stragglers.getCategoryPlot().addRangeMarker(limit);
        double top = sorted.stream().filter(r -> r.getMobaMedianMs() > 0).mapToDouble(r -> r.getMobaMedianMs()
                / Percentiles.of(byShape.get(r.getShape()).stream()
                        .mapToDouble(BenchMeasurement::getMobaMedianMs).toArray(), 0.5)).max().orElse(1);
        stragglers.getCategoryPlot().getRangeAxis().setRange(0, 1.1 * Math.max(top, 1 + stragglerMargin));
        report.heading("Stragglers across hosts").paragraph(rows.stream().filter(BenchMeasurement::isStraggler)
                .count() + " straggler measurement(s): a device slower than the shape's median by more than "
                + Math.round(stragglerMargin * 100) + "%.").chart(stragglers);

        report.heading("Devices").paragraph("Where the tasks ran: the executor, the GPU address(es) Spark assigned"
                + " the task, the CUDA ordinal its backend is bound to and that device's PCI bus id.")
                .table(TaskDevice.usageHeadings(), TaskDevice.usageCells(devices));
        report.heading("Measurements").paragraph("copies: MoBA's upload and one download per batch (the repeats run"
                + " on the uploaded batch); inputs: the time the task took to get the shape's inputs; task: the"
                + " shape's whole wall time on the task.").table(List.of("host", "device", "executor", "GPU",
                "PCI bus", "shape", "mean len", "MoBA ms", "p10", "p90", "gate ms", "attention ms", "dense ms",
                "speedup", "TFLOP/s", "tokens/s", "copies ms", "inputs ms", "task ms", "straggler"),
                sorted.stream().map(r -> List.of(r.getHost(), device(r), str(r.getExecutorId()),
                        str(r.getGpuAddresses()), str(r.getPciBusId()), r.getShape(),
                        String.format("%.0f", r.getMeanLength()), f(r.getMobaMedianMs()),
                        f(r.getMobaP10Ms()), f(r.getMobaP90Ms()), f(r.getGateMedianMs()), f(r.getAttentionMedianMs()),
                        f(r.getDenseMedianMs()), f(r.getSpeedupOverDense()), f(r.getUsefulTflops()),
                        String.format("%.3g", r.getTokensPerSecond()), f(r.getCopyMedianMs()), f(r.getInputMs()),
                        f(r.getTaskWallMs()), r.isStraggler() ? "STRAGGLER" : "")).toList());
        return report;
    }

    /** One line per device and configuration (shape less lengths) over the mean sequence length, log x. */
    private static JFreeChart lengthChart(List<BenchMeasurement> rows, String title, String yLabel, boolean logY,
                                          java.util.function.ToDoubleFunction<BenchMeasurement> y) {
        XYSeriesCollection data = new XYSeriesCollection();
        Map<String, XYSeries> series = new java.util.TreeMap<>();
        for (BenchMeasurement r : rows) {
            double v = y.applyAsDouble(r);
            if (r.getMeanLength() > 0 && v > 0 && Double.isFinite(v)) {
                series.computeIfAbsent(device(r) + " " + r.getConfig(), k -> new XYSeries(k, true, true))
                        .addOrUpdate(r.getMeanLength(), v);
            }
        }
        series.values().forEach(data::addSeries);
        JFreeChart chart = ChartFactory.createXYLineChart(title, "mean sequence length (tokens, log)", yLabel, data,
                PlotOrientation.VERTICAL, true, false, false);
        XYPlot plot = chart.getXYPlot();
        LogAxis x = new LogAxis("mean sequence length (tokens, log)");
        x.setSmallestValue(1);
        x.setNumberFormatOverride(new DecimalFormat("#,##0"));
        plot.setDomainAxis(x);
        if (logY) {
            LogAxis logAxis = new LogAxis(yLabel);
            logAxis.setSmallestValue(1e-6);
            logAxis.setNumberFormatOverride(new DecimalFormat("0.###"));
            plot.setRangeAxis(logAxis);
        }
        XYLineAndShapeRenderer renderer = (XYLineAndShapeRenderer) plot.getRenderer();
        renderer.setDefaultShapesVisible(true);
        return chart;
    }

    private static String device(BenchMeasurement r) {
        return r.getHost() + (r.getDeviceOrdinal() < 0 ? " cpu" : " gpu" + r.getDeviceOrdinal());
    }

    private static String str(String s) {
        return s == null ? "-" : s;
    }

    private static String f(double v) {
        return String.format("%.3f", v);
    }
}
