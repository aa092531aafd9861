package org.moba.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CudaSourceHashTest {
    /** The script build-fatbin.sh uses to write moba.fatbin.sha256 (surefire runs in the module folder). */
    private static final Path SOURCE_HASH_SCRIPT = Path.of("src/main/cuda/source-hash.sh");

    @TempDir
    Path dir;

    private void write(String name, String text) throws IOException {
        Path p = dir.resolve(name);
        Files.createDirectories(p.getParent());
        Files.writeString(p, text, StandardCharsets.UTF_8);
    }

    @Test
    void onlyCuAndCuhFilesOfTheFolderItselfCountInByteOrder() throws IOException {
        write("moba_attn.cuh", "a");
        write("B.cuh", "b");
        write("moba.cu", "c");
        write("sub/other.cu", "not built");
        write("notes.h", "not built");
        write("ABI.md", "docs");
        write("build-fatbin.sh", "script");
        assertEquals(List.of("B.cuh", "moba.cu", "moba_attn.cuh"), CudaSourceHash.sources(dir));
    }

    @Test
    void agreesWithTheScriptThatWritesTheCommittedHash() throws Exception {
        Assumptions.assumeTrue(Files.exists(SOURCE_HASH_SCRIPT), SOURCE_HASH_SCRIPT + " not in this checkout");
        Files.copy(SOURCE_HASH_SCRIPT, dir.resolve("source-hash.sh"));
        write("z.cu", "__global__ void z() {}\n");
        write("a.cuh", "#pragma once\n");
        write("M.cuh", "no newline at end");
        write("skip.h", "not a source");
        Process p = new ProcessBuilder("bash", dir.resolve("source-hash.sh").toString()).redirectErrorStream(true)
                .start();
        String printed = new String(p.getInputStream().readAllBytes(), StandardCharsets.US_ASCII).trim();
        assertEquals(0, p.waitFor(), printed);
        assertEquals(printed.split("\\s+")[0], CudaSourceHash.of(dir));
    }

    @Test
    void editsAndReorderingChangeTheHash() throws IOException {
        write("a.cu", "int x;");
        write("b.cuh", "int y;");
        String before = CudaSourceHash.of(dir);
        write("a.cu", "int z;");
        String edited = CudaSourceHash.of(dir);
        assertNotEquals(before, edited);
        Files.move(dir.resolve("a.cu"), dir.resolve("c.cu"));
        assertNotEquals(edited, CudaSourceHash.of(dir), "a.cu renamed to c.cu now comes after b.cuh");
    }

    @Test
    void recordedHashIsTheFirstWordOfTheFile() throws IOException {
        write("moba.fatbin.sha256", "ABCdef0123  -\n");
        assertEquals("abcdef0123", CudaSourceHash.recorded(dir.resolve("moba.fatbin.sha256")));
    }
}
