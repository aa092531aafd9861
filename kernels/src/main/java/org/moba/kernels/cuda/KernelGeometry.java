package org.moba.kernels.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;

/**
 * The launch geometry the kernels of {@code moba.fatbin} were compiled with: threads per block, tile rows and dynamic
 * shared memory per head dim, one entry per traits struct constant. {@code kernels/src/main/cuda/build-fatbin.sh}
 * generates {@code moba-geometry.properties} from those structs ({@code moba_geometry.cu}) together with the fatbin,
 * so the launch code reads the numbers instead of restating them; a key that is missing fails at once, naming it.
 */
final class KernelGeometry {
    static final String RESOURCE = "/org/moba/kernels/cuda/moba-geometry.properties";
    private static final Properties VALUES = load();

    private KernelGeometry() {
    }

    /** The value of {@code key}, for example {@code flash.block_m}. */
    static int get(String key) {
        String value = VALUES.getProperty(key);
        if (value == null) {
            throw new IllegalStateException(RESOURCE + " has no '" + key + "': rebuild it with "
                    + "kernels/src/main/cuda/build-fatbin.sh, which generates it from the kernels' traits");
        }
        return Integer.parseInt(value.trim());
    }

    /** Dynamic shared memory of a kernel family ({@code <family>.smem.d<headDim>}) in bytes. */
    static int sharedMemory(String family, int headDim) {
        return get(family + ".smem.d" + headDim);
    }

    /** The hash of the CUDA sources this geometry was generated from (as {@code moba.fatbin.sha256}). */
    static String sourcesHash() {
        return VALUES.getProperty("sources.sha256", "");
    }

    private static Properties load() {
        Properties values = new Properties();
        try (InputStream in = KernelGeometry.class.getResourceAsStream(RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException(RESOURCE + " is not on the classpath: the CUDA backend's jar is "
                        + "incomplete (kernels/src/main/cuda/build-fatbin.sh writes it next to moba.fatbin)");
            }
            values.load(in);
        } catch (IOException e) {
            throw new UncheckedIOException("reading " + RESOURCE, e);
        }
        return values;
    }
}
