package org.moba.kernels.cuda;

import jcuda.driver.CUresult;

/**
 * The device (or pinned host memory) could not hold a batch. Recoverable: the caller should split the batch,
 * e.g. halve its token budget, and retry.
 */
public class CudaOutOfMemoryException extends CudaCallException {
    private static final long serialVersionUID = 1L;

    public CudaOutOfMemoryException(String message) {
        super(message, CUresult.CUDA_ERROR_OUT_OF_MEMORY);
    }
}
