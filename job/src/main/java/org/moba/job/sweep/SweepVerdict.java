package org.moba.job.sweep;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Function;

/**
 * The verdict of one sweep configuration: it passes when every one of its sequences does. The gradient maxima are
 * over the sequences whose backward was checked ({@code gradientsChecked} of them; null when none was).
 */
public record SweepVerdict(String config, String dtype, int sequences, long tokensCompared, long tokens,
                           double maxOutRelL2, double maxLseRelL2, long selectionMismatches, long nearTies,
                           long gradientsChecked, Double maxDqRelL2, Double maxDkRelL2, Double maxDvRelL2,
                           boolean pass, String reproduce) {

    static List<SweepVerdict> of(List<SweepRow> rows) {
        Map<String, List<SweepRow>> byConfig = new LinkedHashMap<>();
        rows.forEach(r -> byConfig.computeIfAbsent(r.getConfig(), k -> new ArrayList<>()).add(r));
        List<SweepVerdict> verdicts = new ArrayList<>();
        byConfig.forEach((config, group) -> verdicts.add(new SweepVerdict(config, group.get(0).getDtype(),
                group.size(),
                group.stream().mapToLong(SweepRow::getTokensCompared).sum(),
                group.stream().mapToLong(SweepRow::getLength).sum(),
                group.stream().mapToDouble(SweepRow::getOutRelL2).max().orElse(0),
                group.stream().mapToDouble(SweepRow::getLseRelL2).max().orElse(0),
                group.stream().mapToLong(SweepRow::getSelectionMismatches).sum(),
                group.stream().mapToLong(SweepRow::getNearTies).sum(),
                group.stream().filter(r -> r.getDqRelL2() != null).count(),
                max(group, SweepRow::getDqRelL2), max(group, SweepRow::getDkRelL2), max(group, SweepRow::getDvRelL2),
                group.stream().allMatch(SweepRow::isPass),
                group.get(0).getReproduce())));
        return verdicts;
    }

    private static Double max(List<SweepRow> rows, Function<SweepRow, Double> field) {
        return rows.stream().map(field).filter(Objects::nonNull).max(Double::compare).orElse(null);
    }

    private static String sci(Double x) {
        return x == null ? "-" : String.format("%.2e", x);
    }

    static String render(List<SweepVerdict> verdicts) {
        StringBuilder sb = new StringBuilder();
        boolean gradients = verdicts.stream().anyMatch(v -> v.gradientsChecked() > 0);
        String fmt = "%-58s %5s %15s %11s %11s %6s %6s" + (gradients ? " %9s %9s %9s %9s" : "%s%s%s%s") + "  %s%n";
        sb.append(String.format(fmt, "configuration", "seqs", "tokens checked", "out relL2", "lse relL2", "sel!=",
                "ties", gradients ? "bwd seqs" : "", gradients ? "dq relL2" : "", gradients ? "dk relL2" : "",
                gradients ? "dv relL2" : "", "verdict"));
        for (SweepVerdict v : verdicts) {
            sb.append(String.format(fmt, v.config().length() > 58 ? v.config().substring(0, 57) + "~" : v.config(),
                    v.sequences(), v.tokensCompared() + "/" + v.tokens(), String.format("%.2e", v.maxOutRelL2()),
                    String.format("%.2e", v.maxLseRelL2()), v.selectionMismatches(), v.nearTies(),
                    gradients ? Long.toString(v.gradientsChecked()) : "", gradients ? sci(v.maxDqRelL2()) : "",
                    gradients ? sci(v.maxDkRelL2()) : "", gradients ? sci(v.maxDvRelL2()) : "",
                    v.pass() ? "pass" : "FAIL"));
        }
        return sb.toString();
    }
}
