package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.moba.kernels.BatchLayout;
import org.moba.kernels.DType;
import org.moba.kernels.MobaInputException;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

class CudaInputRulesTest {

    static PackedBatch batch(DType dtype, int headDim, int length) {
        BatchLayout layout = new BatchLayout(dtype, 2, 1, headDim);
        return PackedBatch.of(layout, new int[] {0, length}, length, new short[length * 2 * headDim],
                new short[length * headDim], new short[length * headDim]);
    }

    @ParameterizedTest(name = "{0} D={1} chunk {2}: accepted")
    @CsvSource({"FP16, 64, 64", "BF16, 128, 128", "FP16, 128, 4096", "BF16, 64, 65536"})
    void supportedShapesPass(DType dtype, int headDim, int chunk) {
        assertDoesNotThrow(() -> CudaInputRules.check(batch(dtype, headDim, 70), MobaParams.of(chunk, 3)));
    }

    @ParameterizedTest(name = "D={0} rejected, message names head_dim and 64, 128")
    @CsvSource({"32", "96", "256"})
    void unsupportedHeadDimIsRejected(int headDim) {
        MobaInputException e = assertThrows(MobaInputException.class,
                () -> CudaInputRules.check(batch(DType.FP16, headDim, 5), MobaParams.of(64, 2)));
        assertTrue(e.getMessage().contains("head_dim (D) = " + headDim) && e.getMessage().contains("64, 128"),
                e.getMessage());
    }

    @ParameterizedTest(name = "chunk {0} rejected, message names chunk_size and the rule")
    @CsvSource({"1", "32", "100", "65600", "131072"})
    void unsupportedChunkSizeIsRejected(int chunk) {
        MobaInputException e = assertThrows(MobaInputException.class,
                () -> CudaInputRules.check(batch(DType.BF16, 64, 5), MobaParams.of(chunk, 2)));
        assertTrue(e.getMessage().contains("chunk_size = " + chunk)
                && e.getMessage().contains("multiple of 64 up to 65536"), e.getMessage());
    }
}
