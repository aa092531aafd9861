package org.moba.job;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class LengthMixTest {

    @Test
    void fixedAndBoundaryForms() {
        assertArrayEquals(new int[] {65536, 65536}, new LengthMix("2x65536").lengths(1, 128));
        assertArrayEquals(new int[] {63, 64, 65, 127, 128, 129}, new LengthMix("boundary:2").lengths(1, 64));
        assertArrayEquals(new int[] {1, 1, 1}, new LengthMix("single:3").lengths(9, 64));
    }

    @Test
    void randomFormsStayInRangeAndDependOnlyOnSeed() {
        int[] a = new LengthMix("uniform:500:256-2048").lengths(7, 128);
        assertArrayEquals(a, new LengthMix("uniform:500:256-2048").lengths(7, 128));
        assertTrue(Arrays.stream(a).allMatch(n -> n >= 256 && n <= 2048));
        assertTrue(Arrays.stream(a).distinct().count() > 100, "uniform lengths barely vary");
        int[] huge = new LengthMix("huge:50:100:9000").lengths(3, 64);
        assertEquals(1, Arrays.stream(huge).filter(n -> n == 9000).count());
        assertEquals(49, Arrays.stream(huge).filter(n -> n == 100).count());
        int[] bimodal = new LengthMix("bimodal:1000:16:4096:0.25").lengths(3, 64);
        long longOnes = Arrays.stream(bimodal).filter(n -> n == 4096).count();
        assertTrue(longOnes > 150 && longOnes < 350, "bimodal long share off: " + longOnes);
        int[] tail = new LengthMix("lognormal:2000:512:1.0").lengths(3, 64);
        int[] sorted = tail.clone();
        Arrays.sort(sorted);
        assertTrue(sorted[1000] > 400 && sorted[1000] < 650, "log-normal median off: " + sorted[1000]);
    }

    @ParameterizedTest(name = "''{0}'' is rejected: {1}")
    @CsvSource(delimiter = '|', value = {
            "uniform:10:50-20|max length 20 < min length 50",
            "uniform:0:1-5|sequence count must be >= 1, got 0",
            "bimodal:10:16:4096|'bimodal' takes 4 fields separated by ':'",
            "zebra:3|unknown form",
            "3xabc|cannot read a number in it"})
    void badSpecsNameTheSpecAndTheProblem(String spec, String problem) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new LengthMix(spec));
        assertTrue(e.getMessage().startsWith("length mix '" + spec + "': "), e.getMessage());
        assertTrue(e.getMessage().contains(problem), e.getMessage());
    }
}
