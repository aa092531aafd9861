package org.moba.kernels.reference;

import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moba.kernels.ErrorMetrics;
import org.moba.kernels.MobaParams;
import org.moba.kernels.PackedBatch;

/**
 * The oracle's backward against central finite differences of {@code L = sum(out * G)} for a fixed random G.
 * The selection must not move under the perturbation (no gradient flows through the gate); every perturbed forward
 * is checked to have kept it.
 */
class MobaReferenceGradientTest {
    private static final double STEP = 1e-5;
    /** Central differences at step 1e-5 are good to ~1e-10 here; 1e-6 leaves room without hiding a wrong term. */
    private static final double TOLERANCE = 1e-6;

    static Stream<Arguments> cases() {
        MobaParams moba2 = MobaParams.of(2, 2);
        MobaParams moba3 = MobaParams.of(3, 3).withSoftmaxScale(0.7f);
        MobaParams dense = MobaParams.denseCausal(2);
        int[] lengths = {9, 0, 5, 1};
        return Stream.of(
                Arguments.of(moba2, 2, 2, lengths),
                Arguments.of(moba2, 4, 2, lengths),
                Arguments.of(moba3, 2, 1, new int[] {11, 4}),
                Arguments.of(MobaParams.of(2, 1), 2, 1, lengths),
                Arguments.of(dense, 2, 2, lengths),
                Arguments.of(dense, 4, 2, lengths));
    }

    @ParameterizedTest(name = "{0}, H={1}, Hkv={2}, lengths {3}: dq, dk, dv match finite differences")
    @MethodSource("cases")
    void backwardMatchesFiniteDifferences(MobaParams params, int heads, int kvHeads, int[] lengths) {
        VarlenDoubles x = ReferenceFixtures.randomDoubles(heads * 100L + kvHeads + params.topk(), heads, kvHeads, 4,
                lengths);
        double[] g = ReferenceFixtures.gaussians(new SplittableRandom(7), x.q().length);
        MobaReference.Gradients analytic = MobaReference.backward(x, params, g);
        int[] selection = MobaReference.forward(x, params).selected();

        double[] dq = new double[x.q().length];
        double[] dk = new double[x.k().length];
        double[] dv = new double[x.v().length];
        for (int i = 0; i < dq.length; i++) {
            dq[i] = centralDifference(x, params, g, selection, 0, i);
        }
        for (int i = 0; i < dk.length; i++) {
            dk[i] = centralDifference(x, params, g, selection, 1, i);
            dv[i] = centralDifference(x, params, g, selection, 2, i);
        }
        assertAll(
                () -> assertSmall("dq", ErrorMetrics.relativeL2(dq, analytic.dq())),
                () -> assertSmall("dk", ErrorMetrics.relativeL2(dk, analytic.dk())),
                () -> assertSmall("dv", ErrorMetrics.relativeL2(dv, analytic.dv())));
    }

    private static void assertSmall(String what, double error) {
        assertTrue(error < TOLERANCE, what + ": relative L2 error vs finite differences " + error);
    }

    /** dL/d(tensor[index]) with tensor 0 = q, 1 = k, 2 = v. */
    private static double centralDifference(VarlenDoubles x, MobaParams params, double[] g, int[] selection,
                                            int tensor, int index) {
        return (loss(perturbed(x, tensor, index, STEP), params, g, selection)
                - loss(perturbed(x, tensor, index, -STEP), params, g, selection)) / (2 * STEP);
    }

    private static VarlenDoubles perturbed(VarlenDoubles x, int tensor, int index, double step) {
        double[][] qkv = {x.q().clone(), x.k().clone(), x.v().clone()};
        qkv[tensor][index] += step;
        return x.withTensors(qkv[0], qkv[1], qkv[2]);
    }

    private static double loss(VarlenDoubles x, MobaParams params, double[] g, int[] selection) {
        MobaReference.Forward f = MobaReference.forward(x, params);
        assertArrayEquals(selection, f.selected(), "the selection moved under the perturbation: choose another seed");
        double sum = 0;
        for (int i = 0; i < g.length; i++) {
            sum += f.out()[i] * g[i];
        }
        return sum;
    }

    @Test
    void givenSelectionIsUsedAsGiven() {
        PackedBatch batch = ReferenceFixtures.randomBatch(11, ReferenceFixtures.layout(4, 2), 70, 0, 33);
        MobaParams params = MobaParams.of(8, 3);
        double[] g = ReferenceFixtures.gaussians(new SplittableRandom(5), batch.q().length);
        MobaReference.Forward forward = MobaReference.forward(batch, params);
        MobaReference.Gradients own = MobaReference.backward(batch, params, g);
        MobaReference.Gradients given = MobaReference.backward(batch, params, g, forward.selected(),
                forward.selectionWidth());
        assertArrayEquals(own.dq(), given.dq(), "dq with the gate's own selection given");
        assertArrayEquals(own.dk(), given.dk(), "dk with the gate's own selection given");
        assertArrayEquals(own.dv(), given.dv(), "dv with the gate's own selection given");
        // Another selection changes the result: every query of a later chunk takes chunks 0 and 1.
        int[] other = forward.selected().clone();
        int w = forward.selectionWidth();
        for (int row = 0; row < other.length / w; row++) {
            if (other[row * w + 1] >= 0) {
                other[row * w] = 0;
                other[row * w + 1] = 1;
            }
        }
        MobaReference.Gradients changed = MobaReference.backward(batch, params, g, other, w);
        assertTrue(ErrorMetrics.relativeL2(own.dk(), changed.dk()) > 1e-3, "a different selection is used");
    }
}
