package org.moba.job.score;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.Row;
import org.jfree.chart.ChartFactory;
import org.jfree.chart.plot.PlotOrientation;
import org.jfree.data.statistics.HistogramDataset;
import org.moba.job.HtmlReport;

/** The HTML report of {@code score}: the distribution of MoBA's recall and cosine similarity against dense. */
final class ScoreReport {
    private ScoreReport() {
    }

    /** {@code metrics} rows: id, outcome, length, mean_recall, min_cosine, max_rel_error, reason. */
    static HtmlReport of(Map<String, Object> summary, List<Row> metrics) throws IOException {
        HtmlReport report = new HtmlReport("MoBA score");
        report.table(List.of("metric", "value"), summary.entrySet().stream()
                .map(e -> List.of(e.getKey(), String.valueOf(e.getValue()))).toList());
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
        List<Row> rejected = metrics.stream().filter(r -> ScoreSchema.REJECTED.equals(r.getString(1))).toList();
        if (!rejected.isEmpty()) {
            report.heading("Rejected records").table(List.of("id", "reason"),
                    rejected.stream().map(r -> List.of(r.getString(0), r.getString(6))).toList());
        }
        return report;
    }
}
