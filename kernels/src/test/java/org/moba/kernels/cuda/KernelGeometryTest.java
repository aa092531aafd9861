package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The generated launch geometry (moba-geometry.properties) as the Java launch code reads it; no GPU needed. */
class KernelGeometryTest {
    @Test
    void aMissingKeyFailsNamingItAndTheFix() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> KernelGeometry.get("gate.smem.d96"));
        assertTrue(e.getMessage().contains("'gate.smem.d96'"), e.getMessage());
        assertTrue(e.getMessage().contains("build-fatbin.sh"), e.getMessage());
    }

    @Test
    void tilesAreWhatTheLaunchCodeAndTheInputRulesAssume() {
        assertEquals(KernelGeometry.get("flash.block_m"), BatchPlan.TILE_ROWS);
        assertEquals(KernelGeometry.get("bwd.block_m"), BatchPlan.TILE_ROWS, "the backward walks the forward's tiles");
        assertEquals(2 * BatchPlan.TILE_ROWS, BatchPlan.WIDE_TILE_ROWS, "two consumer warpgroups of 64 rows");
        assertEquals(BatchPlan.WIDE_TILE_ROWS, MobaBackwardKernels.FUSED_BLOCK_KEYS,
                "the fused backward's key blocks are the plan's 128-row tiles");
        assertEquals(0, CudaInputRules.CHUNK_MULTIPLE % KernelGeometry.get("flash.block_n"),
                "a chunk is a whole number of key blocks");
    }

    @Test
    void everyKernelFamilyHasSharedMemoryForEveryBuiltHeadDim() {
        for (String family : new String[] {"gate", "flash", "selected", "hopper_fwd", "hopper_selected", "hopper_dq", "bwd_dq",
                "bwd_dq_selected", "bwd_dkdv"}) {
            for (int headDim : CudaInputRules.HEAD_DIMS) {
                int bytes = KernelGeometry.sharedMemory(family, headDim);
                assertTrue(bytes > 0 && bytes <= 227 * 1024, family + " at D = " + headDim + ": " + bytes);
            }
        }
        int fused = KernelGeometry.sharedMemory("hopper_bwd", MobaBackwardKernels.FUSED_HEAD_DIM);
        assertTrue(fused > 0 && fused <= 227 * 1024, "hopper_bwd: " + fused);
    }
}
