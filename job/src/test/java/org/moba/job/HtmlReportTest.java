package org.moba.job;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.Graphics2D;
import java.awt.geom.Point2D;
import java.awt.geom.Rectangle2D;
import java.nio.charset.StandardCharsets;

import org.jfree.chart.ChartRenderingInfo;
import org.jfree.chart.JFreeChart;
import org.jfree.chart.plot.PiePlot;
import org.jfree.data.general.DefaultPieDataset;
import org.junit.jupiter.api.Test;

class HtmlReportTest {
    @Test
    void chartsRenderAsEmbeddedPngs() throws Exception {
        DefaultPieDataset<String> data = new DefaultPieDataset<>();
        data.setValue("kept", 0.8);
        data.setValue("dropped", 0.2);
        String html = new String(new HtmlReport("r").chart(new JFreeChart("mass", new PiePlot<>(data))).toHtml(),
                StandardCharsets.UTF_8);
        assertTrue(html.contains("data:image/png;base64,"), html);
    }

    /** What a Java runtime without fonts or fontconfig throws when a chart draws its title. */
    @Test
    void aChartThatCannotDrawTextBecomesANoteAndTheTablesStay() throws Exception {
        JFreeChart broken = new JFreeChart("recall by head", new PiePlot<>(new DefaultPieDataset<String>())) {
            @Override
            public void draw(Graphics2D g2, Rectangle2D area, Point2D anchor, ChartRenderingInfo info) {
                throw new InternalError("Fontconfig head is null, check your fonts or fonts configuration");
            }
        };
        HtmlReport report = new HtmlReport("score").chart(broken)
                .table(java.util.List.of("head"), java.util.List.of(java.util.List.of("0")));
        String html = new String(report.toHtml(), StandardCharsets.UTF_8);
        assertTrue(html.contains("Chart 'recall by head' not rendered"), html);
        assertTrue(html.contains("Fontconfig head is null"), html);
        assertTrue(html.contains("<td>0</td>"), html);
    }
}
