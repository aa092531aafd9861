package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/** The committed fatbin must come from the committed CUDA sources; runs everywhere, no GPU needed. */
class FatbinFreshnessTest {
    /** Surefire runs in the module folder. */
    private static final Path SOURCES = Path.of("src/main/cuda");
    private static final Path RESOURCES = Path.of("src/main/resources/org/moba/kernels/cuda");
    private static final String REBUILD = "CUDA sources changed but the fatbin was not rebuilt: run "
            + "kernels/src/main/cuda/build-fatbin.sh";

    @Test
    void committedFatbinHashMatchesTheCudaSources() {
        Path hashFile = RESOURCES.resolve("moba.fatbin.sha256");
        boolean hasSources = Files.isDirectory(SOURCES) && !CudaSourceHash.sources(SOURCES).isEmpty();
        Assumptions.assumeTrue(hasSources || Files.exists(hashFile),
                "this checkout has neither CUDA sources nor a fatbin (kernels not merged yet)");
        assertTrue(Files.exists(hashFile), REBUILD + " (" + hashFile + " is missing)");
        assertTrue(Files.exists(RESOURCES.resolve("moba.fatbin")), REBUILD + " (moba.fatbin is missing)");
        assertEquals(CudaSourceHash.recorded(hashFile), CudaSourceHash.of(SOURCES), REBUILD);
    }

    @Test
    void launchGeometryComesFromTheSameBuildAsTheFatbin() {
        Path hashFile = RESOURCES.resolve("moba.fatbin.sha256");
        Assumptions.assumeTrue(Files.exists(hashFile), "this checkout has no fatbin (kernels not merged yet)");
        assertEquals(CudaSourceHash.recorded(hashFile), KernelGeometry.sourcesHash(),
                REBUILD + " (moba-geometry.properties is from another build than moba.fatbin)");
    }
}
