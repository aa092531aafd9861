package org.moba.kernels.cuda;

import java.util.function.Supplier;

import jcuda.driver.CUresult;

/** Turns a CUDA driver status code into an exception whose message says what was being done. */
final class CudaCheck {
    private CudaCheck() {
    }

    static void check(int status, String operation) {
        if (status != CUresult.CUDA_SUCCESS) {
            throw failure(status, operation);
        }
    }

    /** For hot paths: the message is only built on failure. */
    static void check(int status, Supplier<String> operation) {
        if (status != CUresult.CUDA_SUCCESS) {
            throw failure(status, operation.get());
        }
    }

    static CudaCallException failure(int status, String operation) {
        return new CudaCallException(operation + " failed: " + CUresult.stringFor(status), status);
    }
}
