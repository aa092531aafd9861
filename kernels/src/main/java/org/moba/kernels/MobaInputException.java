package org.moba.kernels;

/**
 * Invalid input to a MoBA backend. The message names what is wrong precisely enough to find it:
 * the sequence index or id, the field and the offending value.
 */
public class MobaInputException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    public MobaInputException(String message) {
        super(message);
    }
}
