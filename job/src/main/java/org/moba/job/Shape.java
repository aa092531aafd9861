package org.moba.job;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaParams;

/** The attention shape of a bench or sweep point: dtype, heads, head dim, chunk size and topk. */
public record Shape(DType dtype, int heads, int kvHeads, int headDim, int chunk, int topk) implements Serializable {

    public Shape {
        new BatchLayout(dtype, heads, kvHeads, headDim);
        MobaParams.of(chunk, topk);
    }

    public BatchLayout layout() {
        return new BatchLayout(dtype, heads, kvHeads, headDim);
    }

    public MobaParams params() {
        return MobaParams.of(chunk, topk);
    }

    /** A compact label for tables: {@code bf16 H16/16 D128 C128 k8}. */
    public String label() {
        return dtype.label() + " H" + heads + "/" + kvHeads + " D" + headDim + " C" + chunk + " k" + topk;
    }

    /** {@code H/Hkv} (or {@code H} for plain multi-head attention) as {@code {H, Hkv}}. */
    public static int[] parseHeads(String heads) {
        String[] parts = heads.split("/");
        try {
            int h = Integer.parseInt(parts[0].trim());
            return new int[] {h, parts.length > 1 ? Integer.parseInt(parts[1].trim()) : h};
        } catch (NumberFormatException e) {
            throw new MobaInputException("--heads '" + heads + "' is not H/Hkv, e.g. 16/4");
        }
    }

    /**
     * The cross product of the grid options of {@code bench} and {@code sweep}; heads are written {@code H/Hkv}
     * (or {@code H} for plain multi-head attention). Every shape is validated before anything runs.
     */
    public static List<Shape> grid(List<String> dtypes, List<String> heads, List<Integer> headDims,
                                   List<Integer> chunks, List<Integer> topks) {
        List<Shape> shapes = new ArrayList<>();
        for (String dt : dtypes) {
            for (String hh : heads) {
                int[] hk = parseHeads(hh);
                for (int d : headDims) {
                    for (int c : chunks) {
                        for (int k : topks) {
                            shapes.add(new Shape(DType.parse(dt), hk[0], hk[1], d, c, k));
                        }
                    }
                }
            }
        }
        return shapes;
    }
}
