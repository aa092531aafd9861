package org.moba.job.sweep;

import java.awt.BasicStroke;
import java.awt.Color;
import java.io.IOException;
import java.util.List;
import java.util.Map;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.axis.LogAxis;
import org.jfree.chart.plot.CategoryPlot;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.chart.plot.ValueMarker;
import org.jfree.data.category.DefaultCategoryDataset;
import org.jfree.data.statistics.DefaultBoxAndWhiskerCategoryDataset;
import org.moba.job.HtmlReport;
import org.moba.job.spark.TaskDevice;
import org.moba.kernels.DType;
import org.moba.kernels.reference.OracleComparison;

/** The HTML report of {@code sweep}: errors per configuration against the thresholds, and the failures. */
final class SweepReport {
    private SweepReport() {
    }

    static HtmlReport of(List<SweepVerdict> verdicts, List<SweepRow> rows, List<Map<String, Object>> devices)
            throws IOException {
        long failed = verdicts.stream().filter(v -> !v.pass()).count();
        HtmlReport report = new HtmlReport("MoBA sweep");
        report.paragraph(verdicts.size() + " configuration(s), " + failed + " failed. Thresholds (relative L2 against"
                + " the float64 oracle): out " + OracleComparison.outTolerance(DType.FP16) + " (fp16) / "
                + OracleComparison.outTolerance(DType.BF16) + " (bf16), lse " + OracleComparison.LSE_TOLERANCE + ".");
        for (DType dtype : DType.values()) {
            List<SweepVerdict> mine = verdicts.stream().filter(v -> v.dtype().equals(dtype.label())).toList();
            if (mine.isEmpty()) {
                continue;
            }
            DefaultCategoryDataset errors = new DefaultCategoryDataset();
            // Log axes cannot show 0 (a length-1 sequence reproduces v exactly): floor at 1e-12.
            mine.forEach(v -> errors.addValue(Math.max(v.maxOutRelL2(), 1e-12), "out", v.config()));
            mine.forEach(v -> errors.addValue(Math.max(v.maxLseRelL2(), 1e-12), "lse", v.config()));
            JFreeChart chart = ChartFactory.createBarChart(dtype.label() + ": worst relative L2 error per configuration",
                    "configuration", "relative L2 (log)", errors, PlotOrientation.HORIZONTAL, true, false, false);
            CategoryPlot plot = chart.getCategoryPlot();
            LogAxis log = new LogAxis("relative L2 (log)");
            log.setRange(1e-13, 1);
            log.setNumberFormatOverride(new java.text.DecimalFormat("0E0"));
            plot.setRangeAxis(log);
            plot.addRangeMarker(marker(OracleComparison.outTolerance(dtype), Color.RED));
            plot.addRangeMarker(marker(OracleComparison.LSE_TOLERANCE, Color.BLUE));
            report.heading(dtype.label() + " errors").chart(chart);

            // The distribution over sequences, per configuration: box = quartiles, whiskers = 1.5 IQR.
            DefaultBoxAndWhiskerCategoryDataset spread = new DefaultBoxAndWhiskerCategoryDataset();
            for (SweepVerdict v : mine) {
                List<Double> out = rows.stream().filter(r -> r.getConfig().equals(v.config()))
                        .map(r -> Math.log10(Math.max(r.getOutRelL2(), 1e-12))).toList();
                if (!out.isEmpty()) {
                    spread.add(out, "out", v.config());
                }
            }
            JFreeChart box = ChartFactory.createBoxAndWhiskerChart(dtype.label()
                    + ": out relative L2 per sequence (log10), threshold in red", "configuration",
                    "log10 relative L2", spread, false);
            box.getCategoryPlot().setOrientation(PlotOrientation.HORIZONTAL);
            box.getCategoryPlot().addRangeMarker(marker(Math.log10(OracleComparison.outTolerance(dtype)), Color.RED));
            report.chart(box);
        }
        DefaultCategoryDataset selection = new DefaultCategoryDataset();
        verdicts.forEach(v -> {
            selection.addValue(v.selectionMismatches(), "selection mismatches", v.config());
            selection.addValue(v.nearTies(), "near-ties", v.config());
        });
        double most = verdicts.stream().mapToDouble(v -> Math.max(v.selectionMismatches(), v.nearTies())).max()
                .orElse(0);
        JFreeChart selectionChart = ChartFactory.createBarChart(
                "Selected-chunk mismatches against the oracle, and near-ties, per configuration", "configuration",
                "rows (token, head)", selection, PlotOrientation.HORIZONTAL, true, false, false);
        selectionChart.getCategoryPlot().getRangeAxis().setRange(0, Math.max(1, most * 1.1));
        report.heading("Selection mismatches vs near-ties").paragraph("Rows (token, head) whose selected chunks"
                + " differ from the oracle's: near-ties, where the oracle's gate margin is too small to call (excused"
                + " and left out of the errors), and mismatches, with a clear margin (a failure).").chart(selectionChart);
        report.heading("Configurations").table(List.of("configuration", "sequences", "tokens checked", "out rel L2",
                "lse rel L2", "selection mismatches", "near-ties", "verdict"), verdicts.stream().map(v -> List.of(
                v.config(), Integer.toString(v.sequences()), v.tokensCompared() + "/" + v.tokens(),
                String.format("%.2e", v.maxOutRelL2()), String.format("%.2e", v.maxLseRelL2()),
                Long.toString(v.selectionMismatches()), Long.toString(v.nearTies()), v.pass() ? "pass" : "FAIL"))
                .toList());
        report.heading("Devices").paragraph("Where the tasks ran: the executor, the GPU address(es) Spark assigned"
                + " the task, the CUDA ordinal its backend is bound to and that device's PCI bus id; rows are checked"
                + " sequences.").table(TaskDevice.usageHeadings(), TaskDevice.usageCells(devices));
        if (failed > 0) {
            report.heading("Failures").table(List.of("configuration", "reproduce"), verdicts.stream()
                    .filter(v -> !v.pass()).map(v -> List.of(v.config(), v.reproduce())).toList());
        }
        return report;
    }

    private static ValueMarker marker(double value, Color color) {
        ValueMarker m = new ValueMarker(value, color, new BasicStroke(2f));
        m.setLabel("threshold " + value);
        return m;
    }
}
