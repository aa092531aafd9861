package org.moba.job.score;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.Row;
import java.util.ArrayList;
import java.util.TreeMap;
import java.util.stream.Collectors;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.JFreeChart;
import org.jfree.data.category.DefaultCategoryDataset;
import org.jfree.data.xy.XYSeries;
import org.jfree.data.xy.XYSeriesCollection;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.data.statistics.HistogramDataset;
import org.moba.job.HtmlReport;
import org.moba.job.spark.TaskDevice;

/** The HTML report of {@code score}: the distribution of MoBA's recall and cosine similarity against dense. */
final class ScoreReport {
    private ScoreReport() {
    }

    /**
     * {@code metrics} rows: id, outcome, length, mean_recall, min_cosine, max_rel_error, reason; {@code perHead} rows
     * (scored sequences only): head, recall, cosine, rel_error, length.
     */
    static HtmlReport of(Map<String, Object> summary, List<Row> metrics, List<Row> perHead,
                         List<Map<String, Object>> devices) throws IOException {
        HtmlReport report = new HtmlReport("MoBA score");
        report.table(List.of("metric", "value"), summary.entrySet().stream()
                .map(e -> List.of(e.getKey(), String.valueOf(e.getValue()))).toList());
        report.heading("Devices").paragraph("Where the records went: the executor, the GPU address(es) Spark"
                + " assigned the task, the CUDA ordinal its backend is bound to and that device's PCI bus id; rows are"
                + " records, tokens the scored ones.").table(TaskDevice.usageHeadings(), TaskDevice.usageCells(devices));
        List<Row> scored = metrics.stream().filter(r -> ScoreSchema.SCORED.equals(r.getString(1))).toList();
        if (!scored.isEmpty()) {
            HistogramDataset recall = new HistogramDataset();
            recall.addSeries("mean recall per sequence", scored.stream().mapToDouble(r -> r.getDouble(3)).toArray(),
                    20);
            report.heading("Recall against full attention").chart(ChartFactory.createHistogram(
                    "exp(lse_moba - lse_dense), mean over tokens and heads", "recall", "sequences", recall,
                    PlotOrientation.VERTICAL, false, false, false));
            HistogramDataset cosine = new HistogramDataset();
            cosine.addSeries("worst head's cosine per sequence", scored.stream().mapToDouble(r -> r.getDouble(4))
                    .toArray(), 20);
            report.heading("Cosine similarity of out against dense").chart(ChartFactory.createHistogram(
                    "cosine(out_moba, out_dense), worst head per sequence", "cosine", "sequences", cosine,
                    PlotOrientation.VERTICAL, false, false, false));
        }
        if (!perHead.isEmpty()) {
            Map<Integer, List<Row>> byHead = new TreeMap<>(perHead.stream()
                    .collect(Collectors.groupingBy(r -> r.getInt(0))));
            DefaultCategoryDataset means = new DefaultCategoryDataset();
            List<List<String>> table = new ArrayList<>();
            byHead.forEach((head, rows) -> {
                double recall = rows.stream().mapToDouble(r -> r.getDouble(1)).average().orElse(Double.NaN);
                double minRecall = rows.stream().mapToDouble(r -> r.getDouble(1)).min().orElse(Double.NaN);
                double cosine = rows.stream().mapToDouble(r -> r.getDouble(2)).average().orElse(Double.NaN);
                double minCosine = rows.stream().mapToDouble(r -> r.getDouble(2)).min().orElse(Double.NaN);
                double relError = rows.stream().mapToDouble(r -> r.getDouble(3)).max().orElse(Double.NaN);
                means.addValue(recall, "mean recall", "head " + head);
                means.addValue(cosine, "mean cosine", "head " + head);
                table.add(List.of(Integer.toString(head), Integer.toString(rows.size()), f(recall), f(minRecall),
                        f(cosine), f(minCosine), f(relError)));
            });
            JFreeChart chart = ChartFactory.createBarChart("Mean recall and cosine per query head (chunk "
                    + summary.get("chunk") + ", topk " + summary.get("topk") + ")", "head", "mean over sequences",
                    means, PlotOrientation.VERTICAL, true, false, false);
            double low = perHead.stream().mapToDouble(r -> Math.min(r.getDouble(1), r.getDouble(2))).min().orElse(0);
            chart.getCategoryPlot().getRangeAxis().setRange(Math.max(0, Math.floor((low - 0.01) * 100) / 100), 1.0);
            report.heading("Per head").chart(chart).table(List.of("head", "sequences", "mean recall", "min recall",
                    "mean cosine", "min cosine", "max rel error"), table);

            XYSeriesCollection byLength = new XYSeriesCollection();
            XYSeries series = new XYSeries("mean recall per sequence", false, true);
            scored.forEach(r -> series.add(r.getInt(2), r.getDouble(3)));
            byLength.addSeries(series);
            report.heading("Recall vs sequence length").chart(ChartFactory.createScatterPlot(
                    "Mean recall per sequence vs its length (chunk " + summary.get("chunk") + ")", "length (tokens)",
                    "mean recall", byLength, PlotOrientation.VERTICAL, false, false, false));
        }
        List<Row> rejected = metrics.stream().filter(r -> ScoreSchema.REJECTED.equals(r.getString(1))).toList();
        if (!rejected.isEmpty()) {
            report.heading("Rejected records").table(List.of("id", "reason"),
                    rejected.stream().map(r -> List.of(r.getString(0), r.getString(6))).toList());
        }
        return report;
    }

    private static String f(double v) {
        return String.format("%.4f", v);
    }
}
