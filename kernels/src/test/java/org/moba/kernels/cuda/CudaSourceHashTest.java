package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CudaSourceHashTest {
    @TempDir
    Path dir;

    private void write(String name, String text) throws IOException {
        Path p = dir.resolve(name);
        Files.createDirectories(p.getParent());
        Files.writeString(p, text, StandardCharsets.UTF_8);
    }

    @Test
    void onlyCudaSourcesCountInByteOrder() throws IOException {
        write("moba_attn.cu", "a");
        write("B.cuh", "b");
        write("common/types.h", "c");
        write("ABI.md", "docs");
        write("build-fatbin.sh", "script");
        assertEquals(List.of("B.cuh", "common/types.h", "moba_attn.cu"), CudaSourceHash.sources(dir));
    }

    @Test
    void sameAsTheShellDefinition() throws Exception {
        write("z.cu", "__global__ void z() {}\n");
        write("a/x.cuh", "#pragma once\n");
        write("m.h", "no newline at end");
        String shell = "cd '" + dir + "' && find . -type f \\( -name '*.cu' -o -name '*.cuh' -o -name '*.h' \\) "
                + "| sed 's|^\\./||' | LC_ALL=C sort | while read -r f; do printf '%s\\n' \"$f\"; cat \"$f\"; done "
                + "| sha256sum";
        Process p = new ProcessBuilder("bash", "-c", shell).redirectErrorStream(true).start();
        String printed = new String(p.getInputStream().readAllBytes(), StandardCharsets.US_ASCII).trim();
        assertEquals(0, p.waitFor(), printed);
        assertEquals(printed.split("\\s+")[0], CudaSourceHash.of(dir));
    }

    @Test
    void anyEditOrRenameChangesTheHash() throws IOException {
        write("k.cu", "int x;");
        String before = CudaSourceHash.of(dir);
        write("k.cu", "int y;");
        String edited = CudaSourceHash.of(dir);
        assertNotEquals(before, edited);
        Files.move(dir.resolve("k.cu"), dir.resolve("j.cu"));
        assertNotEquals(edited, CudaSourceHash.of(dir));
    }

    @Test
    void recordedHashIsTheFirstWordOfTheFile() throws IOException {
        write("moba.fatbin.sha256", "ABCdef0123  -\n");
        assertEquals("abcdef0123", CudaSourceHash.recorded(dir.resolve("moba.fatbin.sha256")));
    }
}
