package org.moba.kernels.cuda;

/** A CUDA driver call failed; the message names the operation, the device and the batch it was working on. */
public class CudaCallException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int status;

    public CudaCallException(String message, int status) {
        super(message);
        this.status = status;
    }

    /** The {@code CUresult} code. */
    public int status() {
        return status;
    }
}
