package org.moba.job.sweep;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** The verdict of one sweep configuration: it passes when every one of its sequences does. */
public record SweepVerdict(String config, String dtype, int sequences, long tokensCompared, long tokens,
                           double maxOutRelL2, double maxLseRelL2, long selectionMismatches, long nearTies,
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
                group.stream().allMatch(SweepRow::isPass),
                group.get(0).getReproduce())));
        return verdicts;
    }

    static String render(List<SweepVerdict> verdicts) {
        StringBuilder sb = new StringBuilder();
        String fmt = "%-58s %5s %15s %11s %11s %6s %6s  %s%n";
        sb.append(String.format(fmt, "configuration", "seqs", "tokens checked", "out relL2", "lse relL2", "sel!=",
                "ties", "verdict"));
        for (SweepVerdict v : verdicts) {
            sb.append(String.format(fmt, v.config().length() > 58 ? v.config().substring(0, 57) + "~" : v.config(),
                    v.sequences(), v.tokensCompared() + "/" + v.tokens(), String.format("%.2e", v.maxOutRelL2()),
                    String.format("%.2e", v.maxLseRelL2()), v.selectionMismatches(), v.nearTies(),
                    v.pass() ? "pass" : "FAIL"));
        }
        return sb.toString();
    }
}
