package org.moba.job.bench;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.io.IOException;
import java.util.List;
import org.moba.job.LengthMix;
import org.moba.job.Shape;
import org.moba.kernels.DType;

/**
 * A bench spec file: {@code {"shapes": [{"dtype": "fp16", "heads": 16, "kvHeads": 16, "headDim": 128,
 * "chunk": 128, "topk": 8, "lengths": "2x65536", "tokensPerBatch": 131072}, ...]}}.
 */
final class BenchSpec {
    /** One shape as written in the file. */
    record ShapeEntry(String dtype, int heads, Integer kvHeads, int headDim, int chunk, int topk, String lengths,
                      Integer tokensPerBatch) {
    }

    record SpecFile(List<ShapeEntry> shapes) {
    }

    private BenchSpec() {
    }

    static List<BenchShape> read(File file) throws IOException {
        SpecFile parsed = new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, true)
                .readValue(file, SpecFile.class);
        if (parsed.shapes() == null || parsed.shapes().isEmpty()) {
            throw new IllegalArgumentException("bench spec " + file + " lists no shapes");
        }
        return parsed.shapes().stream().map(e -> {
            int hkv = e.kvHeads() == null ? e.heads() : e.kvHeads();
            int budget = e.tokensPerBatch() == null ? 65_536 : e.tokensPerBatch();
            return new BenchShape(new Shape(DType.parse(e.dtype()), e.heads(), hkv, e.headDim(), e.chunk(), e.topk()),
                    new LengthMix(e.lengths()), budget);
        }).toList();
    }
}
