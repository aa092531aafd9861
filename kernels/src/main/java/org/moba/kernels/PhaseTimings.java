package org.moba.kernels;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/** Milliseconds spent per named phase of one backend call, in the order the phases ran. */
public final class PhaseTimings {
    private final Map<String, Double> millis = new LinkedHashMap<>();

    public PhaseTimings put(String phase, double ms) {
        millis.merge(phase, ms, Double::sum);
        return this;
    }

    public double get(String phase) {
        return millis.getOrDefault(phase, 0.0);
    }

    public double total() {
        return millis.values().stream().mapToDouble(Double::doubleValue).sum();
    }

    public Map<String, Double> asMap() {
        return Collections.unmodifiableMap(millis);
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder();
        millis.forEach((k, v) -> sb.append(sb.length() == 0 ? "" : ", ").append(k).append('=')
                .append(String.format("%.3f ms", v)));
        return sb.toString();
    }
}
