package org.moba.kernels.cpu;

import org.moba.kernels.DType;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * A batch converted to fp32 once, in the layouts the vectorized loops want:
 * <ul>
 *   <li>{@code q}: {@code [T, H, D]} as in the batch;</li>
 *   <li>keys and values per (kv head, segment), where a segment is a piece of at most
 *       {@link VectorMath#SEGMENT} keys of one chunk (one segment per chunk unless C is larger): keys as a
 *       transposed tile {@code [D][segment length]} (scores in axpy form), values as rows
 *       {@code [segment length][D]};</li>
 *   <li>chunk key means per (sequence, kv head) transposed, {@code [D][full chunks]} (docs/semantics.md: fp32
 *       sums times {@code 1/C}; only full chunks are ever candidates, so partial ones get no mean).</li>
 * </ul>
 * Chunks are numbered globally: sequence {@code b}'s chunk {@code j} is {@code chunkBase[b] + j}; its segments are
 * {@code segmentBase[chunk] ..< segmentBase[chunk + 1]}.
 */
final class FloatTensors {
    final float[] q;
    /** [kv head][segment][d][key]. */
    final float[][][][] keyTiles;
    /** [kv head][segment][key][d]. */
    final float[][][][] valueRows;
    /** [sequence][kv head][d][full chunk]. */
    final float[][][][] meansT;
    final int[] chunkBase;
    final int[] segmentBase;

    private final PackedBatch batch;
    private final int chunkSize;

    private FloatTensors(PackedBatch batch, MobaParams params) {
        this.batch = batch;
        this.chunkSize = params.chunkSize();
        int sequences = batch.numSequences();
        chunkBase = new int[sequences + 1];
        for (int b = 0; b < sequences; b++) {
            chunkBase[b + 1] = chunkBase[b] + params.chunksOf(batch.seqLength(b));
        }
        int chunks = chunkBase[sequences];
        segmentBase = new int[chunks + 1];
        for (int b = 0, c = 0; b < sequences; b++) {
            for (int j = 0; j < chunkBase[b + 1] - chunkBase[b]; j++, c++) {
                int length = Math.min(chunkSize, batch.seqLength(b) - j * chunkSize);
                segmentBase[c + 1] = segmentBase[c] + (length - 1) / VectorMath.SEGMENT + 1;
            }
        }
        q = new float[batch.q().length];
        keyTiles = new float[batch.kvHeads()][segmentBase[chunks]][][];
        valueRows = new float[batch.kvHeads()][segmentBase[chunks]][][];
        meansT = new float[sequences][batch.kvHeads()][][];
    }

    /** Converts {@code batch} in parallel; the chunk means are a separate step ({@link #computeMeans}). */
    static FloatTensors convert(PackedBatch batch, MobaParams params, ParallelLoop loop) {
        FloatTensors t = new FloatTensors(batch, params);
        int hkv = batch.kvHeads();
        int chunks = t.chunkBase[batch.numSequences()];
        int qRowsPerTask = 256;
        int qTasks = (batch.totalTokens() + qRowsPerTask - 1) / qRowsPerTask;
        loop.forEach(qTasks + hkv * chunks, () -> task -> {
            if (task < qTasks) {
                t.convertQueries(task * qRowsPerTask, Math.min(batch.totalTokens(), (task + 1) * qRowsPerTask));
            } else {
                int tile = task - qTasks;
                t.convertChunk(tile / chunks, tile % chunks);
            }
        });
        return t;
    }

    private void convertQueries(int fromToken, int toToken) {
        int row = batch.heads() * batch.headDim();
        DType dtype = batch.dtype();
        short[] src = batch.q();
        for (int i = fromToken * row, end = toToken * row; i < end; i++) {
            q[i] = dtype.toFloat(src[i]);
        }
    }

    private void convertChunk(int g, int globalChunk) {
        int b = sequenceOfChunk(globalChunk);
        int chunkStart = batch.seqStart(b) + (globalChunk - chunkBase[b]) * chunkSize;
        int chunkEnd = Math.min(chunkStart + chunkSize, batch.seqStart(b) + batch.seqLength(b));
        for (int s = segmentBase[globalChunk]; s < segmentBase[globalChunk + 1]; s++) {
            int first = chunkStart + (s - segmentBase[globalChunk]) * VectorMath.SEGMENT;
            convertSegment(g, s, first, Math.min(VectorMath.SEGMENT, chunkEnd - first));
        }
    }

    private void convertSegment(int g, int segment, int first, int length) {
        int d = batch.headDim();
        int hkv = batch.kvHeads();
        DType dtype = batch.dtype();
        short[] k = batch.k();
        short[] v = batch.v();
        float[][] values = new float[length][d];
        for (int key = 0; key < length; key++) {
            int base = ((first + key) * hkv + g) * d;
            float[] valueRow = values[key];
            for (int i = 0; i < d; i++) {
                valueRow[i] = dtype.toFloat(v[base + i]);
            }
        }
        // Transposed with the dimension outermost: contiguous writes; the strided reads stay within the segment's
        // few hundred cached lines.
        float[][] keys = new float[d][length];
        int stride = hkv * d;
        for (int i = 0; i < d; i++) {
            float[] keyRow = keys[i];
            for (int key = 0, src = (first * hkv + g) * d + i; key < length; key++, src += stride) {
                keyRow[key] = dtype.toFloat(k[src]);
            }
        }
        keyTiles[g][segment] = keys;
        valueRows[g][segment] = values;
    }

    /** Chunk key means of every full chunk, in parallel over (sequence, kv head). */
    void computeMeans(ParallelLoop loop) {
        int hkv = batch.kvHeads();
        loop.forEach(batch.numSequences() * hkv, () -> task -> meansOf(task / hkv, task % hkv));
    }

    private void meansOf(int b, int g) {
        int full = batch.seqLength(b) / chunkSize;
        int d = batch.headDim();
        float[][] means = new float[d][full];
        float inverse = 1f / chunkSize;
        for (int j = 0; j < full; j++) {
            int chunk = chunkBase[b] + j;
            for (int i = 0; i < d; i++) {
                float sum = 0f;
                for (int s = segmentBase[chunk]; s < segmentBase[chunk + 1]; s++) {
                    float[] row = keyTiles[g][s][i];
                    for (float key : row) {
                        sum += key;
                    }
                }
                means[i][j] = sum * inverse;
            }
        }
        meansT[b][g] = means;
    }

    private int sequenceOfChunk(int globalChunk) {
        int lo = 0;
        int hi = chunkBase.length - 2;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (chunkBase[mid] <= globalChunk) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return lo;
    }
}
