package org.moba.kernels.cuda;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * The fingerprint of the CUDA sources a fatbin was built from, exactly as {@code kernels/src/main/cuda/source-hash.sh}
 * computes it for {@code build-fatbin.sh}, which writes it next to the fatbin: SHA-256 of the contents of the
 * {@code *.cu} and {@code *.cuh} files directly in the source folder, concatenated in sorted name order (byte order,
 * like {@code LC_ALL=C sort}). A test and the Maven build compare it with the committed {@code moba.fatbin.sha256}.
 *
 * <p>Depends on the JDK only, so the build can run it as a single-file program before anything is compiled:
 * {@code java CudaSourceHash.java SOURCE_DIR [HASH_FILE]} prints the hash, or with a hash file exits 0 when it
 * matches and 1 when the fatbin is stale.
 */
public final class CudaSourceHash {
    private static final List<String> SUFFIXES = List.of(".cu", ".cuh");

    private CudaSourceHash() {
    }

    /** The CUDA sources directly in {@code root} (subfolders are not part of the build), as sorted file names. */
    public static List<String> sources(Path root) {
        try (Stream<Path> files = Files.list(root)) {
            return files.filter(Files::isRegularFile)
                    .map(p -> p.getFileName().toString())
                    .filter(name -> SUFFIXES.stream().anyMatch(name::endsWith))
                    .sorted(CudaSourceHash::compareBytes)
                    .collect(Collectors.toList());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list the CUDA sources under " + root, e);
        }
    }

    /** Lower-case hex SHA-256 of the sources in {@code root}. */
    public static String of(Path root) {
        MessageDigest sha = sha256();
        for (String name : sources(root)) {
            try {
                sha.update(Files.readAllBytes(root.resolve(name)));
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + root.resolve(name), e);
            }
        }
        return HexFormat.of().formatHex(sha.digest());
    }

    /** The hash recorded in a {@code .sha256} file: its first word (so {@code sha256sum} output works too). */
    public static String recorded(Path hashFile) {
        try {
            String text = Files.readString(hashFile, StandardCharsets.US_ASCII).trim();
            return text.isEmpty() ? "" : text.split("\\s+")[0].toLowerCase(Locale.ROOT);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + hashFile, e);
        }
    }

    /** Like {@code LC_ALL=C sort}: compares UTF-8 bytes, not UTF-16 chars. */
    private static int compareBytes(String a, String b) {
        byte[] x = a.getBytes(StandardCharsets.UTF_8);
        byte[] y = b.getBytes(StandardCharsets.UTF_8);
        return Arrays.compareUnsigned(x, y);
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java runtime has SHA-256", e);
        }
    }

    public static void main(String[] args) {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: java CudaSourceHash.java SOURCE_DIR [HASH_FILE]");
            System.exit(2);
        }
        String hash = of(Path.of(args[0]));
        if (args.length == 1) {
            System.out.println(hash);
            return;
        }
        Path hashFile = Path.of(args[1]);
        boolean fresh = Files.exists(hashFile) && recorded(hashFile).equals(hash);
        System.out.println(fresh ? "moba.fatbin is up to date with the CUDA sources (" + hash + ")"
                : "moba.fatbin is stale: sources hash to " + hash);
        System.exit(fresh ? 0 : 1);
    }
}
