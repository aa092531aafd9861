package org.moba.job;

import java.awt.AWTError;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.Base64;
import java.util.List;
import org.jfree.chart.ChartUtils;
import org.jfree.chart.JFreeChart;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A self-contained HTML report: headings, text, tables and charts, with the charts rendered to PNG and embedded
 * as data URIs, so the file opens anywhere with no network access.
 */
public final class HtmlReport {
    private static final Logger LOG = LoggerFactory.getLogger(HtmlReport.class);
    private static final int CHART_WIDTH = 900;
    private static final int CHART_HEIGHT = 420;

    private final StringBuilder body = new StringBuilder();
    private final String title;

    public HtmlReport(String title) {
        System.setProperty("java.awt.headless", "true");
        this.title = title;
        heading(title);
        paragraph("Generated " + ZonedDateTime.now().format(DateTimeFormatter.RFC_1123_DATE_TIME) + ".");
    }

    public HtmlReport heading(String text) {
        body.append(body.length() == 0 ? "<h1>" : "<h2>").append(escape(text))
                .append(body.length() == 0 ? "</h1>\n" : "</h2>\n");
        return this;
    }

    public HtmlReport paragraph(String text) {
        body.append("<p>").append(escape(text)).append("</p>\n");
        return this;
    }

    public HtmlReport table(List<String> header, List<List<String>> rows) {
        body.append("<table>\n<thead><tr>");
        header.forEach(h -> body.append("<th>").append(escape(h)).append("</th>"));
        body.append("</tr></thead>\n<tbody>\n");
        for (List<String> row : rows) {
            body.append("<tr>");
            row.forEach(cell -> body.append("<td>").append(escape(cell)).append("</td>"));
            body.append("</tr>\n");
        }
        body.append("</tbody></table>\n");
        return this;
    }

    /**
     * Embeds the chart as a PNG. A host whose Java runtime cannot render text (no fonts, no fontconfig) gets a note
     * in its place, and a warning in the log, instead of losing the job's results to a report.
     */
    public HtmlReport chart(JFreeChart chart) throws IOException {
        String name = chart.getTitle() == null ? "chart" : chart.getTitle().getText();
        ByteArrayOutputStream png = new ByteArrayOutputStream();
        try {
            ChartUtils.writeChartAsPNG(png, chart, CHART_WIDTH, CHART_HEIGHT);
        } catch (InternalError | AWTError e) { // what AWT throws without fonts; a chart bug still fails the job
            LOG.warn("chart '{}' not rendered: this Java runtime cannot draw text ({}); the report keeps its tables",
                    name, e);
            return paragraph("Chart '" + name + "' not rendered: this Java runtime cannot draw text (" + e
                    + "). Install fonts or fontconfig on this host for charts.");
        }
        body.append("<figure><img class=\"chart\" alt=\"").append(escape(name))
                .append("\" src=\"data:image/png;base64,").append(Base64.getEncoder().encodeToString(png.toByteArray()))
                .append("\"></figure>\n");
        return this;
    }

    public byte[] toHtml() {
        String html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape(title)
                + "</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
                + "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
                + "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}"
                + "td:first-child,th:first-child{text-align:left}img.chart{max-width:100%}</style>\n</head><body>\n"
                + body + "</body></html>\n";
        return html.getBytes(StandardCharsets.UTF_8);
    }

    private static String escape(String s) {
        return s == null ? "" : s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                .replace("\"", "&quot;");
    }
}
